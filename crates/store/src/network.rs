//! Default VPC, per-zone default subnets and private-IP allocation (IPAM).
//!
//! Every tenant gets a default VPC `172.16.0.0/16` and, per zone, a default
//! subnet `172.16.(16·k).0/20` (k from the zone number), as Tencent's default
//! network is laid out. Addresses are allocated with a rotating cursor and a
//! primary key on `(subnet, ip)`, so two instances never share an address.
//! `.0`, `.1` (gateway) and the broadcast address are never handed out.

use crate::db::col;
use crate::{now_ms, Result, StoreError, TenantScope};
use gpucloud_api_types::ids::{new_id, IdKind};
use sqlx::{Any, Transaction};
use std::net::Ipv4Addr;

/// The tenant's default network in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNet {
    /// `vpc-…`.
    pub vpc_id: String,
    /// `subnet-…`.
    pub subnet_id: String,
    /// Subnet CIDR.
    pub cidr: String,
}

/// A subnet of a tenant: `(vpc_id, zone, cidr)`.
pub async fn subnet_get(
    store: &crate::Store,
    scope: &TenantScope,
    subnet_id: &str,
) -> Result<Option<(String, String, String)>> {
    let row =
        sqlx::query("SELECT vpc_id, zone, cidr FROM subnets WHERE subnet_id = $1 AND app_id = $2")
            .bind(subnet_id)
            .bind(scope.app_id())
            .fetch_optional(store.r())
            .await?;
    row.map(|r| Ok((col(&r, "vpc_id")?, col(&r, "zone")?, col(&r, "cidr")?)))
        .transpose()
}

/// Whether a VPC belongs to a tenant.
pub async fn vpc_exists(store: &crate::Store, scope: &TenantScope, vpc_id: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT vpc_id FROM vpcs WHERE vpc_id = $1 AND app_id = $2")
            .bind(vpc_id)
            .bind(scope.app_id())
            .fetch_optional(store.r())
            .await?
            .is_some(),
    )
}

/// Subnet CIDR of the default subnet of zone number `n`.
pub fn default_subnet_cidr(zone_number: u32) -> String {
    let k = (zone_number.saturating_sub(1)) % 16;
    format!("172.16.{}.0/20", k * 16)
}

fn parse_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 30)?;
    Some((u32::from(ip), len))
}

/// The `offset`-th address of a CIDR.
pub fn address_at(cidr: &str, offset: u32) -> Option<String> {
    let (base, len) = parse_cidr(cidr)?;
    let size = 1u32 << (32 - len);
    (offset < size).then(|| Ipv4Addr::from(base + offset).to_string())
}

/// The gateway (first usable address) of a CIDR.
pub fn gateway(cidr: &str) -> Option<String> {
    address_at(cidr, 1)
}

/// Creates (if needed) and returns the tenant's default VPC and zone subnet.
pub(crate) async fn ensure_default_net(
    tx: &mut Transaction<'static, Any>,
    scope: &TenantScope,
    zone: &str,
) -> Result<DefaultNet> {
    let app = scope.app_id();
    let vpc_key = format!("{app}");
    let now = now_ms();
    sqlx::query(
        "INSERT INTO vpcs (vpc_id, app_id, name, cidr, is_default, default_key, created_at) VALUES ($1, $2, 'Default-VPC', '172.16.0.0/16', 1, $3, $4) ON CONFLICT (default_key) DO NOTHING",
    )
    .bind(new_id(IdKind::Vpc))
    .bind(app)
    .bind(&vpc_key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let vpc_id: String = col(
        &sqlx::query("SELECT vpc_id FROM vpcs WHERE default_key = $1")
            .bind(&vpc_key)
            .fetch_one(&mut **tx)
            .await?,
        "vpc_id",
    )?;
    let number: u32 = zone
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1);
    let subnet_key = format!("{app}/{zone}");
    sqlx::query(
        "INSERT INTO subnets (subnet_id, vpc_id, app_id, zone, name, cidr, is_default, default_key, next_offset, created_at) VALUES ($1, $2, $3, $4, 'Default-Subnet', $5, 1, $6, 2, $7) ON CONFLICT (default_key) DO NOTHING",
    )
    .bind(new_id(IdKind::Subnet))
    .bind(&vpc_id)
    .bind(app)
    .bind(zone)
    .bind(default_subnet_cidr(number))
    .bind(&subnet_key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query("SELECT subnet_id, cidr FROM subnets WHERE default_key = $1")
        .bind(&subnet_key)
        .fetch_one(&mut **tx)
        .await?;
    Ok(DefaultNet {
        vpc_id,
        subnet_id: col(&row, "subnet_id")?,
        cidr: col(&row, "cidr")?,
    })
}

/// Allocates the next free address of a subnet to an instance: the cursor
/// moves with one `UPDATE … RETURNING`, the address is taken with an insert
/// that a taken address makes a no-op (then the cursor moves on).
pub(crate) async fn allocate_ip(
    tx: &mut Transaction<'static, Any>,
    subnet_id: &str,
    instance_id: &str,
) -> Result<Option<String>> {
    let mut tries = 0i64;
    loop {
        let row = sqlx::query(
            "UPDATE subnets SET next_offset = next_offset + 1 WHERE subnet_id = $1 RETURNING next_offset, cidr",
        )
        .bind(subnet_id)
        .fetch_one(&mut **tx)
        .await?;
        let cidr: String = col(&row, "cidr")?;
        let next: i64 = col(&row, "next_offset")?;
        let (_, len) =
            parse_cidr(&cidr).ok_or_else(|| StoreError::Corrupt(format!("subnet CIDR {cidr}")))?;
        let size = 1i64 << (32 - len);
        let usable = size - 3; // network, gateway, broadcast
        let mut offset = next - 1;
        if offset < 2 || offset > size - 2 {
            // Wrap around: .2 is next, the cursor continues after it.
            offset = 2;
            sqlx::query("UPDATE subnets SET next_offset = 3 WHERE subnet_id = $1")
                .bind(subnet_id)
                .execute(&mut **tx)
                .await?;
        }
        let ip = address_at(&cidr, offset as u32).expect("offset inside the CIDR");
        let n = sqlx::query(
            "INSERT INTO ip_allocations (subnet_id, ip, instance_id) VALUES ($1, $2, $3) ON CONFLICT (subnet_id, ip) DO NOTHING",
        )
        .bind(subnet_id)
        .bind(&ip)
        .bind(instance_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(Some(ip));
        }
        tries += 1;
        if tries >= usable {
            return Ok(None);
        }
    }
}

/// Frees the addresses of an instance.
pub(crate) async fn release_ips(
    tx: &mut Transaction<'static, Any>,
    instance_id: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM ip_allocations WHERE instance_id = $1")
        .bind(instance_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(default_subnet_cidr(3), "172.16.32.0/20");
        assert_eq!(default_subnet_cidr(1), "172.16.0.0/20");
        assert_eq!(
            address_at("172.16.32.0/20", 2).as_deref(),
            Some("172.16.32.2")
        );
        assert_eq!(
            address_at("172.16.32.0/20", 300).as_deref(),
            Some("172.16.33.44")
        );
        assert_eq!(address_at("172.16.32.0/20", 4096), None);
        assert_eq!(gateway("10.0.0.0/24").as_deref(), Some("10.0.0.1"));
    }
}
