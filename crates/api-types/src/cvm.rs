//! CVM 2017-03-12 wire types (service `cvm`).
//!
//! Field names are exactly Tencent's. Requests list every parameter the
//! official api.json declares, so a valid Tencent request never gets
//! `UnknownParameter`; parameters gpucloud does not act on are kept as raw JSON
//! and refused or ignored by the service layer explicitly. Scalars use the
//! lenient decoders (numbers as strings, `True`/`False`).

use crate::params::lenient;
use crate::Filter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Service name in the credential scope.
pub const SERVICE: &str = "cvm";
/// API version.
pub const VERSION: &str = "2017-03-12";

// ---------------------------------------------------------------------------
// Shared structures
// ---------------------------------------------------------------------------

/// Where an instance lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Placement {
    /// Availability zone, e.g. `ap-guangzhou-3`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub zone: Option<String>,
    /// Project; 0 is the default project.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub project_id: Option<i64>,
    /// Dedicated hosts (CDH) — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ids: Option<Vec<String>>,
    /// The host the instance runs on (gpucloud reports its host id here).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub host_id: Option<String>,
    /// Dedicated resource packs — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_resource_pack_tenancy: Option<String>,
    /// Dedicated resource packs — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_resource_pack_ids: Option<Vec<String>>,
    /// Rack — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_id: Option<String>,
}

/// System disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SystemDisk {
    /// Disk type, e.g. `CLOUD_PREMIUM`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub disk_type: Option<String>,
    /// `disk-…`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub disk_id: Option<String>,
    /// GiB.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub disk_size: Option<i64>,
    /// CDC — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc_id: Option<String>,
    /// Disk name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_name: Option<String>,
    /// Encryption — not offered.
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub encrypt: Option<bool>,
    /// KMS — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// A data disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DataDisk {
    /// GiB (required).
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub disk_size: Option<i64>,
    /// Disk type.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub disk_type: Option<String>,
    /// `disk-…`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub disk_id: Option<String>,
    /// Released with the instance.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub delete_with_instance: Option<bool>,
    /// Snapshot — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Encryption — not offered.
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub encrypt: Option<bool>,
    /// KMS — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Throughput — ignored.
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub throughput_performance: Option<i64>,
    /// CDC — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc_id: Option<String>,
    /// Burst — ignored.
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub burst_performance: Option<bool>,
    /// Disk name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_name: Option<String>,
}

/// VPC attachment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct VirtualPrivateCloud {
    /// `vpc-…`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub vpc_id: Option<String>,
    /// `subnet-…`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub subnet_id: Option<String>,
    /// Gateway mode — not offered.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub as_vpc_gateway: Option<bool>,
    /// Requested private IPs.
    #[serde(default)]
    pub private_ip_addresses: Option<Vec<String>>,
    /// IPv6 — not offered.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub ipv6_address_count: Option<i64>,
}

/// Public network settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InternetAccessible {
    /// Charge type of the bandwidth.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub internet_charge_type: Option<String>,
    /// Mbps; 0 = no public IP.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub internet_max_bandwidth_out: Option<i64>,
    /// Assign a public IP.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub public_ip_assigned: Option<bool>,
    /// Bandwidth package — not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_package_id: Option<String>,
    /// ISP — ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet_service_provider: Option<String>,
    /// Address type — ignored.
    #[serde(
        default,
        rename = "IPv4AddressType",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address_type: Option<String>,
    /// IPv6 — ignored.
    #[serde(
        default,
        rename = "IPv6AddressType",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address_type: Option<String>,
    /// Anti-DDoS — ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_d_do_s_package_id: Option<String>,
}

/// How the tenant logs in.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoginSettings {
    /// Password (never echoed back).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub password: Option<String>,
    /// `skey-…` key pairs.
    #[serde(default)]
    pub key_ids: Option<Vec<String>>,
    /// `"true"`/`"false"`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub keep_image_login: Option<String>,
}

crate::debug_redacted!(LoginSettings { key_ids, keep_image_login } secret { password });

/// Prepaid (monthly) settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InstanceChargePrepaid {
    /// Months: 1–12, 24, 36, 48, 60.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub period: Option<i64>,
    /// Renewal flag.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub renew_flag: Option<String>,
}

/// A resource tag.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Tag {
    /// Key.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub key: Option<String>,
    /// Value.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub value: Option<String>,
}

/// Tags to put on the resources a call creates.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TagSpecification {
    /// `instance`, `keypair`, `ps`, …
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub resource_type: Option<String>,
    /// The tags.
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
}

/// GPU details of an instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GpuInfo {
    /// Number of GPUs (<1 would be a vGPU share; gpucloud passes whole GPUs).
    #[serde(rename = "GPUCount")]
    pub gpu_count: f64,
    /// The UUIDs (`GPU-…`) of the GPUs the instance owns.
    #[serde(rename = "GPUId")]
    pub gpu_id: Vec<String>,
    /// Model, e.g. `NVIDIA H100 SXM 80GB`.
    #[serde(rename = "GPUType")]
    pub gpu_type: String,
    /// gpucloud extension: the health of each GPU, in `GPUId` order, so a
    /// tenant sees which of its GPUs failed (Tencent's SDKs ignore unknown
    /// fields).
    #[serde(rename = "GPUHealth", default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_health: Vec<GpuHealth>,
}

/// gpucloud extension: one GPU's health.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GpuHealth {
    /// `GPU-<uuid>`.
    #[serde(rename = "GPUId")]
    pub gpu_id: String,
    /// `HEALTHY` or `UNHEALTHY`.
    #[serde(rename = "State")]
    pub state: String,
    /// Why it is unhealthy (XID, ECC errors, temperature …).
    #[serde(rename = "Reason")]
    pub reason: String,
}

/// An instance as `DescribeInstances` returns it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Instance {
    pub placement: Placement,
    pub instance_id: String,
    pub instance_type: String,
    #[serde(rename = "CPU")]
    pub cpu: i64,
    pub memory: i64,
    pub restrict_state: String,
    pub instance_name: String,
    pub instance_charge_type: String,
    pub system_disk: SystemDisk,
    pub data_disks: Option<Vec<DataDisk>>,
    pub private_ip_addresses: Vec<String>,
    pub public_ip_addresses: Option<Vec<String>>,
    pub internet_accessible: InternetAccessible,
    pub virtual_private_cloud: VirtualPrivateCloud,
    pub image_id: String,
    pub renew_flag: Option<String>,
    pub created_time: String,
    pub expired_time: Option<String>,
    pub os_name: String,
    pub security_group_ids: Vec<String>,
    pub login_settings: LoginSettings,
    pub instance_state: String,
    pub tags: Vec<Tag>,
    pub stop_charging_mode: String,
    pub uuid: String,
    pub latest_operation: Option<String>,
    pub latest_operation_state: Option<String>,
    pub latest_operation_request_id: Option<String>,
    pub disaster_recover_group_id: String,
    #[serde(rename = "IPv6Addresses")]
    pub ipv6_addresses: Option<Vec<String>>,
    pub cam_role_name: String,
    pub hpc_cluster_id: String,
    pub rdma_ip_addresses: Option<Vec<String>>,
    pub dedicated_cluster_id: String,
    pub isolated_source: String,
    #[serde(rename = "GPUInfo")]
    pub gpu_info: Option<GpuInfo>,
    pub license_type: String,
    pub disable_api_termination: bool,
    pub host_name: String,
    pub default_login_user: String,
    pub default_login_port: i64,
    pub latest_operation_error_msg: Option<String>,
    pub enable_jumbo_frame: bool,
    #[serde(rename = "PublicIPv6Addresses")]
    pub public_ipv6_addresses: Option<Vec<String>>,
    pub partition_number: i64,
}

/// State of one instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceStatus {
    pub instance_id: String,
    pub instance_state: String,
}

/// An instance type offered in a zone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceTypeConfig {
    #[serde(rename = "Zone")]
    pub zone: String,
    #[serde(rename = "InstanceType")]
    pub instance_type: String,
    #[serde(rename = "InstanceFamily")]
    pub instance_family: String,
    #[serde(rename = "GPU")]
    pub gpu: i64,
    #[serde(rename = "CPU")]
    pub cpu: i64,
    #[serde(rename = "Memory")]
    pub memory: i64,
    #[serde(rename = "FPGA")]
    pub fpga: i64,
    #[serde(rename = "GpuCount")]
    pub gpu_count: f64,
    #[serde(rename = "GpuType")]
    pub gpu_type: String,
    #[serde(rename = "GpuMemory")]
    pub gpu_memory: f64,
}

/// A price.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ItemPrice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<f64>,
    pub charge_unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_discount: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_second_step: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_discount_second_step: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_third_step: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_discount_third_step: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_price_one_year: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_price_one_year: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_one_year: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_price_three_year: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_price_three_year: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_three_year: Option<f64>,
}

/// Instance and bandwidth prices.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Price {
    pub instance_price: ItemPrice,
    pub bandwidth_price: Option<ItemPrice>,
}

/// Local disk offering of an instance type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct LocalDiskType {
    pub r#type: String,
    pub partition_type: String,
    pub min_size: i64,
    pub max_size: i64,
    pub required: String,
}

/// Extra attributes of an offering.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Externals {
    pub release_address: Option<bool>,
    pub unsupport_networks: Option<Vec<String>>,
}

/// Stock and price of a type in a zone for a charge type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceTypeQuotaItem {
    pub zone: String,
    pub instance_type: String,
    pub instance_charge_type: String,
    pub network_card: i64,
    pub externals: Externals,
    pub cpu: i64,
    pub memory: i64,
    pub instance_family: String,
    pub type_name: String,
    pub local_disk_type_list: Vec<LocalDiskType>,
    pub status: String,
    pub price: ItemPrice,
    pub sold_out_reason: String,
    pub instance_bandwidth: f64,
    pub instance_pps: i64,
    pub storage_block_amount: i64,
    pub cpu_type: String,
    pub gpu: i64,
    pub fpga: i64,
    pub remark: String,
    pub gpu_count: f64,
    pub frequency: String,
    pub status_category: String,
}

/// An image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Image {
    pub image_id: String,
    pub os_name: String,
    pub image_type: String,
    pub created_time: String,
    pub image_name: String,
    pub image_description: String,
    pub image_size: i64,
    pub architecture: String,
    pub image_state: String,
    pub platform: String,
    pub image_creator: String,
    pub image_source: String,
    pub sync_percent: i64,
    pub is_support_cloudinit: bool,
    pub tags: Vec<Tag>,
    pub license_type: String,
    pub image_family: String,
    pub image_deprecated: bool,
}

/// A key pair.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct KeyPair {
    pub key_id: String,
    pub key_name: String,
    pub project_id: i64,
    pub description: String,
    pub public_key: String,
    /// Only in the `CreateKeyPair` answer; never stored.
    pub private_key: Option<String>,
    pub associated_instance_ids: Vec<String>,
    pub created_time: String,
    pub tags: Vec<Tag>,
}

crate::debug_redacted!(KeyPair { key_id, key_name, project_id, description, public_key, associated_instance_ids, created_time, tags } secret { private_key });

/// A spread placement group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DisasterRecoverGroup {
    pub disaster_recover_group_id: String,
    pub name: String,
    pub r#type: String,
    pub cvm_quota_total: i64,
    pub current_num: i64,
    pub instance_ids: Vec<String>,
    pub create_time: String,
    pub affinity: i64,
    pub strategy: String,
    pub partition_count: i64,
    pub tags: Vec<Tag>,
}

/// A zone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ZoneInfo {
    pub zone: String,
    pub zone_name: String,
    pub zone_id: String,
    pub zone_state: String,
}

/// A region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RegionInfo {
    pub region: String,
    pub region_name: String,
    pub region_state: String,
}

// ---------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------

macro_rules! empty_request {
    ($name:ident) => {
        #[doc = concat!("`", stringify!($name), "` takes no parameters.")]
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {}
    };
}

empty_request!(DescribeRegionsRequest);
empty_request!(DescribeZonesRequest);

/// Answer of `DescribeRegions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeRegionsResponse {
    pub total_count: i64,
    pub region_set: Vec<RegionInfo>,
}

/// Answer of `DescribeZones`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeZonesResponse {
    pub total_count: i64,
    pub zone_set: Vec<ZoneInfo>,
}

/// `DescribeInstanceTypeConfigs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeInstanceTypeConfigsRequest {
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
}

/// Answer of `DescribeInstanceTypeConfigs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInstanceTypeConfigsResponse {
    pub instance_type_config_set: Vec<InstanceTypeConfig>,
}

/// `DescribeZoneInstanceConfigInfos`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeZoneInstanceConfigInfosRequest {
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
}

/// Answer of `DescribeZoneInstanceConfigInfos`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeZoneInstanceConfigInfosResponse {
    pub instance_type_quota_set: Vec<InstanceTypeQuotaItem>,
}

/// `DescribeImages`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeImagesRequest {
    #[serde(default)]
    pub image_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_type: Option<String>,
}

/// Answer of `DescribeImages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeImagesResponse {
    pub image_set: Vec<Image>,
    pub total_count: i64,
}

/// `RunInstances` (also the body of `InquiryPriceRunInstances`).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RunInstancesRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_charge_type: Option<String>,
    #[serde(default)]
    pub instance_charge_prepaid: Option<InstanceChargePrepaid>,
    #[serde(default)]
    pub placement: Option<Placement>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub image_id: Option<String>,
    #[serde(default)]
    pub system_disk: Option<SystemDisk>,
    #[serde(default)]
    pub data_disks: Option<Vec<DataDisk>>,
    #[serde(default)]
    pub virtual_private_cloud: Option<VirtualPrivateCloud>,
    #[serde(default)]
    pub internet_accessible: Option<InternetAccessible>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub instance_count: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub min_count: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_name: Option<String>,
    #[serde(default)]
    pub login_settings: Option<LoginSettings>,
    #[serde(default)]
    pub security_group_ids: Option<Vec<String>>,
    #[serde(default)]
    pub enhanced_service: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub client_token: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub host_name: Option<String>,
    #[serde(default)]
    pub action_timer: Option<Value>,
    #[serde(default)]
    pub disaster_recover_group_ids: Option<Vec<String>>,
    #[serde(default)]
    pub tag_specification: Option<Vec<TagSpecification>>,
    #[serde(default)]
    pub instance_market_options: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub user_data: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub cpu_topology: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub cam_role_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub hpc_cluster_id: Option<String>,
    #[serde(default)]
    pub launch_template: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub dedicated_cluster_id: Option<String>,
    #[serde(default)]
    pub chc_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub partition_number: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub disable_api_termination: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub enable_jumbo_frame: Option<bool>,
    #[serde(default)]
    pub network_interfaces: Option<Value>,
}

crate::debug_redacted!(RunInstancesRequest { instance_charge_type, instance_charge_prepaid, placement, instance_type, image_id, system_disk, data_disks, virtual_private_cloud, internet_accessible, instance_count, min_count, instance_name, login_settings, security_group_ids, enhanced_service, client_token, host_name, action_timer, disaster_recover_group_ids, tag_specification, instance_market_options, metadata, dry_run, cpu_topology, cam_role_name, hpc_cluster_id, launch_template, dedicated_cluster_id, chc_ids, partition_number, disable_api_termination, enable_jumbo_frame, network_interfaces } secret { user_data });

/// Answer of `RunInstances`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunInstancesResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id_set: Option<Vec<String>>,
}

/// Answer of the `InquiryPrice*` actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InquiryPriceResponse {
    pub price: Price,
}

/// `DescribeInstances`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeInstancesRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
}

/// Answer of `DescribeInstances`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInstancesResponse {
    pub total_count: i64,
    pub instance_set: Vec<Instance>,
}

/// `DescribeInstancesStatus`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeInstancesStatusRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
}

/// Answer of `DescribeInstancesStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInstancesStatusResponse {
    pub total_count: i64,
    pub instance_status_set: Vec<InstanceStatus>,
}

/// `StartInstances`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StartInstancesRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
}

/// `StopInstances`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StopInstancesRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub force_stop: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub stop_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub stopped_mode: Option<String>,
}

/// `RebootInstances`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RebootInstancesRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub force_reboot: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub stop_type: Option<String>,
}

/// `TerminateInstances`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TerminateInstancesRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub release_address: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub release_prepaid_data_disks: Option<bool>,
}

/// `ResetInstancesType` and `InquiryPriceResetInstancesType`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResetInstancesTypeRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub force_stop: Option<bool>,
}

/// `ResetInstance`: reinstall the system disk.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResetInstanceRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub image_id: Option<String>,
    #[serde(default)]
    pub system_disk: Option<SystemDisk>,
    #[serde(default)]
    pub login_settings: Option<LoginSettings>,
    #[serde(default)]
    pub enhanced_service: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub host_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub user_data: Option<String>,
}

crate::debug_redacted!(ResetInstanceRequest { instance_id, image_id, system_disk, login_settings, enhanced_service, host_name } secret { user_data });

/// `ModifyInstancesAttribute`.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ModifyInstancesAttributeRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub user_data: Option<String>,
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub cam_role_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub host_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub disable_api_termination: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub cam_role_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub auto_reboot: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub enable_jumbo_frame: Option<bool>,
}

crate::debug_redacted!(ModifyInstancesAttributeRequest { instance_ids, instance_name, security_groups, cam_role_name, host_name, disable_api_termination, cam_role_type, auto_reboot, enable_jumbo_frame } secret { user_data });

/// `CreateKeyPair`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateKeyPairRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub key_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub project_id: Option<i64>,
    #[serde(default)]
    pub tag_specification: Option<Vec<TagSpecification>>,
}

/// Answer of `CreateKeyPair`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyPairResponse {
    pub key_pair: KeyPair,
}

/// `ImportKeyPair`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ImportKeyPairRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub key_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub project_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub public_key: Option<String>,
    #[serde(default)]
    pub tag_specification: Option<Vec<TagSpecification>>,
}

/// Answer of `ImportKeyPair`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyPairResponse {
    pub key_id: String,
}

/// `DescribeKeyPairs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeKeyPairsRequest {
    #[serde(default)]
    pub key_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
}

/// Answer of `DescribeKeyPairs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyPairsResponse {
    pub total_count: i64,
    pub key_pair_set: Vec<KeyPair>,
}

/// `DeleteKeyPairs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeleteKeyPairsRequest {
    #[serde(default)]
    pub key_ids: Option<Vec<String>>,
}

/// `AssociateInstancesKeyPairs` and `DisassociateInstancesKeyPairs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InstancesKeyPairsRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default)]
    pub key_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub force_stop: Option<bool>,
}

/// `ResetInstancesPassword`.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResetInstancesPasswordRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub password: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub user_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub force_stop: Option<bool>,
}

crate::debug_redacted!(ResetInstancesPasswordRequest { instance_ids, user_name, force_stop } secret { password });

/// `ModifyKeyPairAttribute`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ModifyKeyPairAttributeRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub key_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub key_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub description: Option<String>,
}

/// `CreateDisasterRecoverGroup`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateDisasterRecoverGroupRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub r#type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub client_token: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub affinity: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub strategy: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub partition_count: Option<i64>,
    #[serde(default)]
    pub tag_specification: Option<Vec<TagSpecification>>,
}

/// Answer of `CreateDisasterRecoverGroup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateDisasterRecoverGroupResponse {
    pub disaster_recover_group_id: String,
    pub r#type: String,
    pub name: String,
    pub cvm_quota_total: i64,
    pub current_num: i64,
    pub create_time: String,
    pub strategy: String,
    pub partition_count: i64,
}

/// `DescribeDisasterRecoverGroups`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeDisasterRecoverGroupsRequest {
    #[serde(default)]
    pub disaster_recover_group_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
}

/// Answer of `DescribeDisasterRecoverGroups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeDisasterRecoverGroupsResponse {
    pub disaster_recover_group_set: Vec<DisasterRecoverGroup>,
    pub total_count: i64,
}

/// `DeleteDisasterRecoverGroups`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeleteDisasterRecoverGroupsRequest {
    #[serde(default)]
    pub disaster_recover_group_ids: Option<Vec<String>>,
}

/// `DescribeInstanceVncUrl`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeInstanceVncUrlRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_id: Option<String>,
}

/// Answer of `DescribeInstanceVncUrl`: a single-use WebSocket URL to the
/// instance's serial console, valid for 15 seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInstanceVncUrlResponse {
    pub instance_vnc_url: String,
}

/// An answer that carries only the `RequestId`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}
