//! Which idle models to unload to make room: policy order first, then size.

use super::ModelId;

/// An idle, unpinned model that could be unloaded, with the bytes that would come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The model.
    pub model: ModelId,
    /// Bytes its unload returns.
    pub bytes: u64,
}

/// Picks victims from `candidates` (already sorted by policy: cheapest to lose first) whose
/// unloads return at least `deficit` bytes, or `None` if even all of them would not.
///
/// Policy decides *who may go*: only the shortest policy prefix that covers the deficit is
/// considered, so a more important model is never unloaded while less important ones would
/// do. Size decides *how many go*: within that prefix a single model that covers the deficit
/// alone is preferred (the least valuable such one), and otherwise every model whose bytes are
/// not needed is dropped again, so the set is minimal: removing any victim leaves the deficit
/// uncovered. Returning `None` instead of a partial set matters: unloading models that cannot
/// make enough room only costs reloads (and is how Ollama looped forever in issue 18282).
pub fn choose_victims(candidates: &[Candidate], deficit: u64) -> Option<Vec<ModelId>> {
    if deficit == 0 {
        return Some(Vec::new());
    }
    let mut sum = 0u64;
    let mut prefix_len = None;
    for (i, c) in candidates.iter().enumerate() {
        sum = sum.saturating_add(c.bytes);
        if sum >= deficit {
            prefix_len = Some(i + 1);
            break;
        }
    }
    let prefix = &candidates[..prefix_len?];
    if let Some(single) = prefix.iter().find(|c| c.bytes >= deficit) {
        return Some(vec![single.model]);
    }
    let mut chosen: Vec<Candidate> = prefix.to_vec();
    let mut total = sum;
    // Most valuable first: if the rest still covers the deficit, keep this one loaded.
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        let bytes = chosen[i].bytes;
        if total - bytes >= deficit {
            total -= bytes;
            chosen.remove(i);
        }
    }
    Some(chosen.into_iter().map(|c| c.model).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cands(bytes: &[u64]) -> Vec<Candidate> {
        bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Candidate {
                model: ModelId(i as u32),
                bytes: b,
            })
            .collect()
    }

    fn ids(v: &[u32]) -> Vec<ModelId> {
        v.iter().map(|&i| ModelId(i)).collect()
    }

    #[test]
    fn one_large_idle_model_beats_many_small_ones() {
        assert_eq!(choose_victims(&cands(&[1, 1, 20]), 15), Some(ids(&[2])));
    }

    #[test]
    fn least_valuable_model_that_covers_alone_is_chosen() {
        assert_eq!(choose_victims(&cands(&[30, 40]), 15), Some(ids(&[0])));
    }

    #[test]
    fn more_valuable_models_are_kept_when_less_valuable_ones_suffice() {
        // 0 and 1 together cover 6; 2 alone would too, but it is more valuable.
        assert_eq!(choose_victims(&cands(&[3, 3, 100]), 6), Some(ids(&[0, 1])));
    }

    #[test]
    fn unneeded_victims_are_dropped() {
        assert_eq!(choose_victims(&cands(&[5, 1, 10]), 15), Some(ids(&[0, 2])));
    }

    #[test]
    fn nothing_is_evicted_when_everything_would_not_be_enough() {
        assert_eq!(choose_victims(&cands(&[5, 5]), 11), None);
        assert_eq!(choose_victims(&[], 1), None);
        assert_eq!(choose_victims(&cands(&[5]), 0), Some(vec![]));
    }

    proptest! {
        #[test]
        fn victims_cover_the_deficit_minimally_within_the_policy_prefix(
            bytes in prop::collection::vec(0u64..1_000, 0..12),
            deficit in 1u64..4_000,
        ) {
            let c = cands(&bytes);
            let total: u64 = bytes.iter().sum();
            match choose_victims(&c, deficit) {
                None => prop_assert!(total < deficit),
                Some(v) => {
                    let size = |m: &ModelId| bytes[m.0 as usize];
                    let sum: u64 = v.iter().map(size).sum();
                    prop_assert!(sum >= deficit);
                    for m in &v {
                        prop_assert!(sum - size(m) < deficit, "victim {m:?} was not needed");
                    }
                    // Nobody beyond the shortest covering policy prefix is touched.
                    let mut acc = 0;
                    let prefix = bytes.iter().position(|b| { acc += b; acc >= deficit }).unwrap();
                    prop_assert!(v.iter().all(|m| (m.0 as usize) <= prefix));
                }
            }
        }
    }
}
