//! `--simulate SPEC`: a comma-separated list of `COUNT*MODELxGPUS[@ZONE]`,
//! e.g. `4*H100x8,2*T4x4@ap-guangzhou-4`. `COUNT*` may be left out (one host);
//! `CPU` (or `CPUx0`) is a host without GPUs.

use crate::gpu::GpuModel;
use crate::region::Zone;

/// One group of identical simulated hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGroup {
    /// How many hosts.
    pub count: u32,
    /// GPU model, `None` for CPU-only hosts.
    pub model: Option<GpuModel>,
    /// GPUs per host.
    pub gpus: u32,
    /// Zone (`ap-guangzhou-3`).
    pub zone: String,
}

/// Why a SPEC is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimSpecError {
    /// An entry does not follow the grammar.
    #[error(
        "`{0}` is not COUNT*MODELxGPUS[@ZONE] (for example 4*H100x8 or 2*T4x4@ap-guangzhou-4)"
    )]
    Grammar(String),
    /// Unknown GPU model.
    #[error("unknown GPU model `{model}` in `{entry}`; known models: {known}")]
    Model {
        /// The entry.
        entry: String,
        /// The model.
        model: String,
        /// Known keys.
        known: String,
    },
    /// Count or GPUs out of range.
    #[error("`{0}`: COUNT must be 1-100000 and GPUS 1-16 (0 only for CPU hosts)")]
    Range(String),
    /// Zone not in the served region.
    #[error("`{entry}`: zone `{zone}` is not a zone of region {region}")]
    Zone {
        /// The entry.
        entry: String,
        /// The zone.
        zone: String,
        /// The served region.
        region: String,
    },
}

/// Parses a SPEC for a cloud serving `region`, with `default_zone` for entries without `@ZONE`.
pub fn parse(spec: &str, region: &str, default_zone: &str) -> Result<Vec<SimGroup>, SimSpecError> {
    let mut out = Vec::new();
    for raw in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (body, zone) = match raw.split_once('@') {
            Some((b, z)) => (b.trim(), z.trim().to_string()),
            None => (raw, default_zone.to_string()),
        };
        match Zone::parse(&zone) {
            Some(z) if z.region == region => {}
            _ => {
                return Err(SimSpecError::Zone {
                    entry: raw.to_string(),
                    zone,
                    region: region.to_string(),
                })
            }
        }
        let (count, hw) = match body.split_once('*') {
            Some((c, h)) => (
                c.trim()
                    .parse::<u32>()
                    .map_err(|_| SimSpecError::Grammar(raw.to_string()))?,
                h.trim(),
            ),
            None => (1, body),
        };
        let (model_key, gpus) = match hw.rfind(['x', 'X']) {
            Some(i) if hw[i + 1..].bytes().all(|b| b.is_ascii_digit()) && i + 1 < hw.len() => (
                &hw[..i],
                hw[i + 1..]
                    .parse::<u32>()
                    .map_err(|_| SimSpecError::Grammar(raw.to_string()))?,
            ),
            _ if hw.eq_ignore_ascii_case("CPU") => (hw, 0),
            _ => return Err(SimSpecError::Grammar(raw.to_string())),
        };
        let model = if model_key.eq_ignore_ascii_case("CPU") {
            None
        } else {
            Some(GpuModel::from_key(model_key).ok_or_else(|| {
                SimSpecError::Model {
                    entry: raw.to_string(),
                    model: model_key.to_string(),
                    known: crate::gpu::GPU_SPECS
                        .iter()
                        .map(|s| s.key)
                        .chain(["CPU"])
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?)
        };
        let gpus_ok = match model {
            None => gpus == 0,
            Some(_) => (1..=16).contains(&gpus),
        };
        if !(1..=100_000).contains(&count) || !gpus_ok {
            return Err(SimSpecError::Range(raw.to_string()));
        }
        out.push(SimGroup {
            count,
            model,
            gpus,
            zone,
        });
    }
    if out.is_empty() {
        return Err(SimSpecError::Grammar(spec.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let g = parse(
            "4*H100x8,2*T4x4@ap-guangzhou-4",
            "ap-guangzhou",
            "ap-guangzhou-3",
        )
        .unwrap();
        assert_eq!(
            g,
            vec![
                SimGroup {
                    count: 4,
                    model: Some(GpuModel::H100),
                    gpus: 8,
                    zone: "ap-guangzhou-3".into()
                },
                SimGroup {
                    count: 2,
                    model: Some(GpuModel::T4),
                    gpus: 4,
                    zone: "ap-guangzhou-4".into()
                },
            ]
        );
        let g = parse("A100-40Gx8, CPU, 3*CPUx0", "ap-guangzhou", "ap-guangzhou-3").unwrap();
        assert_eq!(g[0].model, Some(GpuModel::A100_40));
        assert_eq!(g[0].count, 1);
        assert_eq!((g[1].model, g[1].gpus), (None, 0));
        assert_eq!(g[2].count, 3);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "4*",
            "x8",
            "4*B200x8",
            "0*H100x8",
            "4*H100x0",
            "4*H100x17",
            "CPUx2",
            "4*H100x8@ap-shanghai-1",
            "4*H100x8@nowhere",
            "four*H100x8",
        ] {
            assert!(
                parse(bad, "ap-guangzhou", "ap-guangzhou-3").is_err(),
                "{bad}"
            );
        }
    }
}
