//! Price rules. `InquiryPrice*`, `DescribeZoneInstanceConfigInfos` and (later)
//! billing all answer from these functions, so a quote and a charge agree.
//!
//! * Pay-as-you-go (`POSTPAID_BY_HOUR`): per GPU-hour from the GPU table plus
//!   0.08 CNY per vCPU-hour and 0.02 CNY per GiB-hour.
//! * Monthly (`PREPAID`): 720 hours at 75 % of the hourly rate per month, with
//!   longer commitments discounted (12 months: 83 %, 24: 70 %, 36+: 60 %).
//! * Public bandwidth: traffic 0.80 CNY/GB, hourly bandwidth 0.063 CNY per
//!   Mbps-hour, monthly bandwidth 23 CNY per Mbps-month.
//!
//! Money is rounded to 0.01 CNY.

use crate::catalog::InstanceType;

/// CNY per vCPU-hour.
pub const CPU_HOURLY: f64 = 0.08;
/// CNY per GiB-hour.
pub const MEM_HOURLY: f64 = 0.02;
/// Monthly price as a share of 720 pay-as-you-go hours.
pub const MONTHLY_FACTOR: f64 = 0.75;

/// How an instance is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeType {
    /// `PREPAID`: months paid up front.
    Prepaid,
    /// `POSTPAID_BY_HOUR`: metered per second, settled hourly.
    PostpaidByHour,
    /// `SPOTPAID`: discounted, preemptible.
    Spotpaid,
}

impl ChargeType {
    /// Parses the API value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PREPAID" => Some(Self::Prepaid),
            "POSTPAID_BY_HOUR" => Some(Self::PostpaidByHour),
            "SPOTPAID" => Some(Self::Spotpaid),
            _ => None,
        }
    }

    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepaid => "PREPAID",
            Self::PostpaidByHour => "POSTPAID_BY_HOUR",
            Self::Spotpaid => "SPOTPAID",
        }
    }
}

/// Rounds to cents.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// List price of one instance of `t` per hour.
pub fn hourly(t: &InstanceType) -> f64 {
    let gpu = t
        .gpu_model()
        .map_or(0.0, |m| m.spec().hourly_price * f64::from(t.gpus));
    round2(gpu + f64::from(t.cpu) * CPU_HOURLY + f64::from(t.memory_gib) * MEM_HOURLY)
}

/// Spot price per hour (30 % of list).
pub fn spot_hourly(t: &InstanceType) -> f64 {
    round2(hourly(t) * 0.3)
}

/// List price of one month.
pub fn monthly(t: &InstanceType) -> f64 {
    round2(hourly(t) * 720.0 * MONTHLY_FACTOR)
}

/// Discount (percent paid, Tencent style: 83.0 = "8.3 折") for a commitment.
pub fn period_discount(months: i64) -> f64 {
    match months {
        m if m >= 36 => 60.0,
        m if m >= 24 => 70.0,
        m if m >= 12 => 83.0,
        _ => 100.0,
    }
}

/// Whether `months` is a period Tencent sells: 1–12, 24, 36, 48, 60.
pub fn valid_period(months: i64) -> bool {
    (1..=12).contains(&months) || matches!(months, 24 | 36 | 48 | 60)
}

/// Prepaid price of `count` instances for `months`: (original, discounted).
pub fn prepaid(t: &InstanceType, months: i64, count: i64) -> (f64, f64) {
    let original = round2(monthly(t) * months as f64 * count as f64);
    let discounted = round2(original * period_discount(months) / 100.0);
    (original, discounted)
}

/// Public bandwidth charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BandwidthPrice {
    /// CNY per GB of traffic.
    PerGb(f64),
    /// CNY per hour for the given Mbps.
    PerHour(f64),
    /// CNY per month for the given Mbps (original, discounted).
    PerMonth(f64, f64),
}

/// Price of public bandwidth for a charge type, `mbps` and prepaid `months`.
pub fn bandwidth(charge_type: &str, mbps: i64, months: i64) -> Option<BandwidthPrice> {
    if mbps <= 0 {
        return None;
    }
    match charge_type {
        "TRAFFIC_POSTPAID_BY_HOUR" => Some(BandwidthPrice::PerGb(0.8)),
        "BANDWIDTH_POSTPAID_BY_HOUR" => Some(BandwidthPrice::PerHour(round2(0.063 * mbps as f64))),
        "BANDWIDTH_PREPAID" => {
            let original = round2(23.0 * mbps as f64 * months.max(1) as f64);
            Some(BandwidthPrice::PerMonth(
                original,
                round2(original * period_discount(months) / 100.0),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::instance_type;

    #[test]
    fn prices() {
        let t = instance_type("GT5.6XLARGE240").unwrap();
        // 28 + 24*0.08 + 240*0.02 = 34.72
        assert_eq!(hourly(t), 34.72);
        let t8 = instance_type("GT5.48XLARGE1920").unwrap();
        assert_eq!(hourly(t8), round2(8.0 * hourly(t)));
        let (orig, disc) = prepaid(t, 12, 2);
        assert_eq!(orig, round2(monthly(t) * 24.0));
        assert_eq!(disc, round2(orig * 0.83));
        let s5 = instance_type("S5.SMALL1").unwrap();
        assert_eq!(hourly(s5), 0.1);
    }

    #[test]
    fn periods() {
        for m in [1, 6, 12, 24, 36, 48, 60] {
            assert!(valid_period(m));
        }
        for m in [0, 13, 18, 25, 61, -1] {
            assert!(!valid_period(m));
        }
    }

    #[test]
    fn bandwidth_prices() {
        assert_eq!(bandwidth("TRAFFIC_POSTPAID_BY_HOUR", 0, 0), None);
        assert_eq!(
            bandwidth("BANDWIDTH_POSTPAID_BY_HOUR", 10, 0),
            Some(BandwidthPrice::PerHour(0.63))
        );
        assert_eq!(
            bandwidth("BANDWIDTH_PREPAID", 1, 1),
            Some(BandwidthPrice::PerMonth(23.0, 23.0))
        );
    }
}
