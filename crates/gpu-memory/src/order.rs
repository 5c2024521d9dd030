//! CUDA device order from NVML's list: which GPUs a CUDA program sees and how it numbers them.
//!
//! NVML lists every GPU by PCI bus id. CUDA numbers them `FASTEST_FIRST` unless
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID`; between GPUs of one model "fastest" ties and CUDA falls back
//! to the PCI order, so the two agree on machines with one kind of GPU. Then
//! `CUDA_VISIBLE_DEVICES` picks and reorders: a comma-separated list of indices into that order
//! or of GPU UUIDs (`GPU-8932f937-…`, any unique prefix); parsing stops at the first entry
//! that names no device (or one already named), as CUDA's does, so the devices before it stay
//! visible; an empty value hides every GPU.

use crate::ProbeError;

/// What identifies one GPU in NVML's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `GPU-xxxxxxxx-xxxx-…` as `nvidia-smi -L` prints it.
    pub uuid: String,
    /// The product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
}

/// The CUDA order of `devices` (given in NVML order): element `i` of the result is the NVML
/// position of CUDA device `i`.
///
/// `visible` is `CUDA_VISIBLE_DEVICES` and `device_order` `CUDA_DEVICE_ORDER` (`None` when
/// unset). When the order cannot be known from NVML alone (GPUs of different models, CUDA's
/// default `FASTEST_FIRST`), the PCI order is used and the second value is `false`: set
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` to make both agree.
pub fn cuda_order(
    visible: Option<&str>,
    device_order: Option<&str>,
    devices: &[Identity],
) -> Result<(Vec<usize>, bool), ProbeError> {
    let pci_order = device_order.is_some_and(|o| o.trim().eq_ignore_ascii_case("PCI_BUS_ID"));
    let one_model = devices.windows(2).all(|w| w[0].name == w[1].name);
    let exact = pci_order || one_model;
    let Some(visible) = visible else {
        return Ok(((0..devices.len()).collect(), exact));
    };
    let mut picked: Vec<usize> = Vec::new();
    for entry in visible.split(',').map(str::trim) {
        if entry.is_empty() {
            break;
        }
        if entry.len() >= 4 && entry[..4].eq_ignore_ascii_case("MIG-") {
            return Err(ProbeError::VisibleDevices {
                value: visible.to_owned(),
                reason: "MIG instances are not probed; give the instance's budget with \
                         MODEL_POOL_BUDGET_CUDA<N>"
                    .to_owned(),
            });
        }
        let position = match entry.parse::<usize>() {
            Ok(index) => (index < devices.len()).then_some(index),
            Err(_) => unique_uuid_prefix(entry, devices),
        };
        match position {
            Some(p) if !picked.contains(&p) => picked.push(p),
            // CUDA stops at the first entry that does not name a new device.
            _ => break,
        }
    }
    Ok((picked, exact))
}

fn unique_uuid_prefix(entry: &str, devices: &[Identity]) -> Option<usize> {
    let entry = entry.to_ascii_lowercase();
    let mut matches = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.uuid.to_ascii_lowercase().starts_with(&entry))
        .map(|(i, _)| i);
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(uuid: &str, name: &str) -> Identity {
        Identity {
            uuid: uuid.to_owned(),
            name: name.to_owned(),
        }
    }

    fn four_h100() -> Vec<Identity> {
        ["GPU-aa11", "GPU-bb22", "GPU-bb33", "GPU-cc44"]
            .into_iter()
            .map(|u| gpu(u, "NVIDIA H100"))
            .collect()
    }

    #[test]
    fn unset_means_every_gpu_in_pci_order() {
        assert_eq!(
            cuda_order(None, None, &four_h100()).unwrap(),
            (vec![0, 1, 2, 3], true)
        );
    }

    #[test]
    fn indices_pick_and_reorder() {
        let (order, _) = cuda_order(Some("2, 0"), None, &four_h100()).unwrap();
        assert_eq!(order, vec![2, 0]);
    }

    #[test]
    fn uuid_prefixes_match_when_unique() {
        let (order, _) = cuda_order(Some("GPU-cc,gpu-AA11"), None, &four_h100()).unwrap();
        assert_eq!(order, vec![3, 0]);
        // `GPU-bb` names two GPUs: CUDA stops there, keeping what came before.
        let (order, _) = cuda_order(Some("3,GPU-bb,0"), None, &four_h100()).unwrap();
        assert_eq!(order, vec![3]);
    }

    #[test]
    fn parsing_stops_at_the_first_invalid_or_repeated_entry() {
        let (order, _) = cuda_order(Some("1,7,0"), None, &four_h100()).unwrap();
        assert_eq!(order, vec![1]);
        let (order, _) = cuda_order(Some("1,1,0"), None, &four_h100()).unwrap();
        assert_eq!(order, vec![1]);
        let (order, _) = cuda_order(Some("-1"), None, &four_h100()).unwrap();
        assert!(order.is_empty());
    }

    #[test]
    fn an_empty_value_hides_every_gpu() {
        let (order, _) = cuda_order(Some(""), None, &four_h100()).unwrap();
        assert!(order.is_empty());
    }

    #[test]
    fn mig_instances_are_an_error_that_names_the_fix() {
        let err = cuda_order(Some("MIG-1234"), None, &four_h100()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("MIG-1234") && text.contains("MODEL_POOL_BUDGET_CUDA"),
            "{text}"
        );
    }

    #[test]
    fn mixed_models_are_exact_only_in_pci_order() {
        let mixed = vec![gpu("GPU-1", "NVIDIA T4"), gpu("GPU-2", "NVIDIA H100")];
        assert!(!cuda_order(None, None, &mixed).unwrap().1);
        assert!(!cuda_order(None, Some("FASTEST_FIRST"), &mixed).unwrap().1);
        assert!(cuda_order(None, Some("PCI_BUS_ID"), &mixed).unwrap().1);
    }
}
