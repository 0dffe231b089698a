//! Images say which runtime they need (`runtime=qemu` for VM images); a zone
//! whose hosts do not offer it refuses the launch with Tencent's code for an
//! image that does not fit, and nothing is left behind.

mod common;

use common::*;
use gpucloud_agent_api::{ControlPlane, HostInventory, RuntimeKind};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_image_needs_a_host_that_runs_vms() {
    let cloud = TestCloud::start("1*CPU").await;
    let (t, _) = cloud.tenant("t").await;
    vm_image(&cloud).await;
    let params = json!({
        "Placement": {"Zone": "ap-guangzhou-3"},
        "ImageId": "img-gcvmtest",
        "InstanceType": "S5.SMALL2",
    });
    // The (simulated) host runs every runtime: the VM image launches.
    let ok = t.cvm("RunInstances", params.clone()).await.unwrap();
    let id = ok["InstanceIdSet"][0].as_str().unwrap().to_string();
    wait_state(&t, &id, "RUNNING").await;
    t.cvm("TerminateInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    wait_gone(&t, &id).await;

    // The host now says it runs containers only (no QEMU on it).
    let host = cloud
        .app
        .store
        .host_get(&cloud.hosts[0])
        .await
        .unwrap()
        .unwrap();
    let mut inv: HostInventory = serde_json::from_value(host.inventory).unwrap();
    inv.runtimes = vec![RuntimeKind::Container];
    cloud.app.gateway.register(&inv).await.unwrap();
    // Dry runs check capacity without side effects: wait for the view to catch up.
    let mut dry = params.clone();
    dry["DryRun"] = json!(true);
    poll(
        "the host to lose its qemu runtime",
        std::time::Duration::from_secs(30),
        || {
            let t = &t;
            let dry = dry.clone();
            async move {
                (code(t.cvm("RunInstances", dry).await)
                    == "InvalidParameterValue.InvalidImageForGivenInstanceType")
                    .then_some(())
            }
        },
    )
    .await;
    let r = t.cvm("RunInstances", params.clone()).await;
    let msg = format!("{r:?}");
    assert!(
        msg.contains("qemu") && msg.contains("gpucloud doctor"),
        "{msg}"
    );
    assert_eq!(
        code(r),
        "InvalidParameterValue.InvalidImageForGivenInstanceType"
    );
    let left = t
        .cvm(
            "DescribeInstances",
            json!({"Filters": [{"Name": "instance-state", "Values": ["PENDING", "RUNNING"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(left["TotalCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_disks_need_a_vm_image_and_go_with_their_instance() {
    let cloud = TestCloud::start("1*CPU").await;
    let (t, _) = cloud.tenant("t").await;
    vm_image(&cloud).await;
    image(&cloud, "img-gcctrtst", "container").await;
    let disks = json!([{"DiskType": "CLOUD_PREMIUM", "DiskSize": 20}]);
    // A container image has nowhere to put a block device.
    let r = t
        .cvm(
            "RunInstances",
            json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gcctrtst",
                   "InstanceType": "S5.SMALL2", "DataDisks": disks}),
        )
        .await;
    assert_eq!(code(r), "InvalidParameterCombination");
    // A disk that outlives its instance would need cloud block storage.
    let r = t
        .cvm(
            "RunInstances",
            json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gcvmtest",
                   "InstanceType": "S5.SMALL2",
                   "DataDisks": [{"DiskSize": 20, "DeleteWithInstance": false}]}),
        )
        .await;
    assert_eq!(code(r), "UnsupportedOperation");
    // A VM takes them.
    let ok = t
        .cvm(
            "RunInstances",
            json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gcvmtest",
                   "InstanceType": "S5.SMALL2", "DataDisks": disks}),
        )
        .await
        .unwrap();
    let id = ok["InstanceIdSet"][0].as_str().unwrap().to_string();
    let i = wait_state(&t, &id, "RUNNING").await;
    assert_eq!(i["DataDisks"][0]["DiskSize"], 20);
    assert_eq!(i["DataDisks"][0]["DeleteWithInstance"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_vm_needs_a_host_that_passes_gpus_through() {
    let cloud = TestCloud::start("1*H100x8").await;
    let (t, _) = cloud.tenant("t").await;
    vm_image(&cloud).await;
    let dry = json!({
        "Placement": {"Zone": "ap-guangzhou-3"},
        "ImageId": "img-gcvmtest",
        "InstanceType": "GT5.6XLARGE240",
        "DryRun": true,
    });
    // A simulated GPU server passes GPUs through: a 1-GPU VM fits.
    t.cvm("RunInstances", dry.clone()).await.unwrap();
    // The same host without an IOMMU (VMs yes, GPUs into VMs no).
    let host = cloud
        .app
        .store
        .host_get(&cloud.hosts[0])
        .await
        .unwrap()
        .unwrap();
    let mut inv: HostInventory = serde_json::from_value(host.inventory).unwrap();
    assert!(inv.gpu_passthrough);
    inv.gpu_passthrough = false;
    cloud.app.gateway.register(&inv).await.unwrap();
    let msg = poll(
        "the host to stop offering GPU passthrough",
        std::time::Duration::from_secs(30),
        || {
            let t = &t;
            let dry = dry.clone();
            async move {
                let r = t.cvm("RunInstances", dry).await;
                let msg = format!("{r:?}");
                (code(r) == "InvalidParameterValue.InvalidImageForGivenInstanceType").then_some(msg)
            }
        },
    )
    .await;
    assert!(msg.contains("GPU passthrough"), "{msg}");
    // Containers still get the GPUs.
    image(&cloud, "img-gcctrtst", "container").await;
    let mut ctr = dry.clone();
    ctr["ImageId"] = json!("img-gcctrtst");
    t.cvm("RunInstances", ctr).await.unwrap();
}
