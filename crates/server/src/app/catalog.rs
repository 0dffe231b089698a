//! What each zone offers, and at what price, computed from real capacity.

use crate::App;
use gpucloud_api_types::cvm::{ItemPrice, Price};
use gpucloud_core::catalog::{InstanceType, INSTANCE_TYPES};
use gpucloud_core::pricing::{self, BandwidthPrice, ChargeType};

/// Zones that have hosts, and the default zone (listed UNAVAILABLE while it has none).
pub fn zones(app: &App) -> Vec<String> {
    let mut z: Vec<String> = app.sched.with_index(|i| i.zones().into_iter().collect());
    // The cloud's own zone exists even before (or without) hosts in it.
    if !z.contains(&app.cfg.default_zone) {
        z.push(app.cfg.default_zone.clone());
        z.sort();
    }
    z
}

/// Whether a zone offers a type: some host there has its GPU model (any host for CPU-only types).
pub fn offers(app: &App, zone: &str, t: &InstanceType) -> bool {
    app.sched.with_index(|i| match t.gpu_model() {
        Some(m) => i.offers(zone, Some(m)),
        None => !i.models_in(zone).is_empty(),
    })
}

/// Types offered in a zone.
pub fn offered_types(app: &App, zone: &str) -> Vec<&'static InstanceType> {
    INSTANCE_TYPES
        .iter()
        .filter(|t| offers(app, zone, t))
        .collect()
}

/// How many instances of a type could start in a zone right now.
pub fn stock(app: &App, zone: &str, t: &InstanceType) -> u64 {
    app.sched
        .with_index(|i| i.placeable(zone, t.gpu_model(), t.gpus, t.cpu, t.memory_mib()))
}

/// Tencent's stock category for a count.
pub fn stock_category(n: u64) -> &'static str {
    match n {
        0 => "WithoutStock",
        1..=2 => "UnderStock",
        3..=9 => "NormalStock",
        _ => "EnoughStock",
    }
}

/// The instance price of `count` instances.
pub fn instance_price(t: &InstanceType, charge: ChargeType, period: i64, count: i64) -> ItemPrice {
    match charge {
        ChargeType::PostpaidByHour | ChargeType::Spotpaid => {
            let unit = if charge == ChargeType::Spotpaid {
                pricing::spot_hourly(t)
            } else {
                pricing::hourly(t)
            };
            let total = pricing::round2(unit * count as f64);
            ItemPrice {
                unit_price: Some(total),
                charge_unit: Some("HOUR".into()),
                unit_price_discount: Some(total),
                discount: Some(100.0),
                ..Default::default()
            }
        }
        ChargeType::Prepaid => {
            let (original, discounted) = pricing::prepaid(t, period, count);
            let (o1, d1) = pricing::prepaid(t, 12, count);
            let (o3, d3) = pricing::prepaid(t, 36, count);
            ItemPrice {
                charge_unit: None,
                original_price: Some(original),
                discount_price: Some(discounted),
                discount: Some(pricing::period_discount(period)),
                original_price_one_year: Some(o1),
                discount_price_one_year: Some(d1),
                discount_one_year: Some(pricing::period_discount(12)),
                original_price_three_year: Some(o3),
                discount_price_three_year: Some(d3),
                discount_three_year: Some(pricing::period_discount(36)),
                ..Default::default()
            }
        }
    }
}

/// Instance and bandwidth price.
pub fn price(
    t: &InstanceType,
    charge: ChargeType,
    period: i64,
    count: i64,
    bandwidth: Option<(&str, i64)>,
) -> Price {
    let bw = bandwidth
        .and_then(|(ct, mbps)| pricing::bandwidth(ct, mbps, period))
        .map(|b| match b {
            BandwidthPrice::PerGb(p) => ItemPrice {
                unit_price: Some(p),
                charge_unit: Some("GB".into()),
                unit_price_discount: Some(p),
                discount: Some(100.0),
                ..Default::default()
            },
            BandwidthPrice::PerHour(p) => ItemPrice {
                unit_price: Some(pricing::round2(p * count as f64)),
                charge_unit: Some("HOUR".into()),
                unit_price_discount: Some(pricing::round2(p * count as f64)),
                discount: Some(100.0),
                ..Default::default()
            },
            BandwidthPrice::PerMonth(o, d) => ItemPrice {
                original_price: Some(pricing::round2(o * count as f64)),
                discount_price: Some(pricing::round2(d * count as f64)),
                discount: Some(pricing::period_discount(period)),
                ..Default::default()
            },
        });
    Price {
        instance_price: instance_price(t, charge, period, count),
        bandwidth_price: bw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(stock_category(0), "WithoutStock");
        assert_eq!(stock_category(2), "UnderStock");
        assert_eq!(stock_category(5), "NormalStock");
        assert_eq!(stock_category(64), "EnoughStock");
    }

    #[test]
    fn prices_scale_with_count() {
        let t = gpucloud_core::catalog::instance_type("GN7.2XLARGE32").unwrap();
        let one = instance_price(t, ChargeType::PostpaidByHour, 0, 1);
        let three = instance_price(t, ChargeType::PostpaidByHour, 0, 3);
        assert_eq!(
            three.unit_price.unwrap(),
            pricing::round2(one.unit_price.unwrap() * 3.0)
        );
        let pre = instance_price(t, ChargeType::Prepaid, 12, 1);
        assert_eq!(pre.discount, Some(83.0));
    }
}
