//! AOS, Cedar and Rego (regorus interpreter and RVM) produce exactly the plain-Rust
//! oracle's outcome for every scenario size and request, so the side-by-side
//! benchmark compares the same decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aos_benches::scenario::{policies, reference_outcome, requests};
use aos_benches::{AosEquivalent, CedarEquivalent, RegoEquivalent, RegoVmEquivalent};

const SIZES: [usize; 4] = [1, 10, 100, 1000];

#[test]
fn aos_cedar_and_rego_match_the_reference_for_every_size_and_request() {
    for n in SIZES {
        let set = policies(n);
        let reqs = requests(n);
        let aos = AosEquivalent::new(&set).expect("aos builds");
        let cedar = CedarEquivalent::new(&set).expect("cedar builds");
        let rego = RegoEquivalent::new(&set).expect("rego builds");
        let rvm = RegoVmEquivalent::new(&set).expect("rego vm builds");
        // Twice, forwards then backwards, so reused state cannot leak
        // between calls unnoticed.
        let order = (0..reqs.len()).chain((0..reqs.len()).rev());
        for i in order {
            let req = &reqs[i];
            let expected = reference_outcome(&set, req);
            assert_eq!(aos.decide(req), expected, "aos, n={n}, request {i}: {req:?}");
            let got_cedar = cedar.decide(req).expect("cedar decides");
            let got_rego = rego.decide(req).expect("rego decides");
            assert_eq!(got_cedar, expected, "cedar, n={n}, request {i}: {req:?}");
            assert_eq!(got_rego, expected, "rego, n={n}, request {i}: {req:?}");
            let got_rvm = rvm.decide(req).expect("rego vm decides");
            assert_eq!(got_rvm, expected, "rego vm, n={n}, request {i}: {req:?}");
        }
    }
}

#[test]
fn scenario_is_deterministic_and_well_formed() {
    for n in SIZES {
        let set = policies(n);
        assert_eq!(set.len(), n);
        assert_eq!(
            set.iter().map(|p| &p.id).collect::<Vec<_>>(),
            policies(n).iter().map(|p| &p.id).collect::<Vec<_>>()
        );
        assert!(set.iter().enumerate().all(|(i, p)| p.id == format!("pol-{i:05}")));
        assert!(set.iter().all(|p| p.agent_ids.len() <= 2));
        assert!(set.iter().step_by(4).all(|p| p.agent_ids.is_empty()));
        assert!(set.iter().enumerate().filter(|(i, _)| i % 4 != 0).all(|(_, p)| !p.agent_ids.is_empty()));
    }
}

#[test]
fn requests_mix_allows_denies_and_scoped_hits() {
    for n in SIZES {
        let set = policies(n);
        let outcomes: Vec<_> = requests(n).iter().map(|r| reference_outcome(&set, r)).collect();
        assert!(outcomes.iter().any(|o| o.deny), "n={n}: no deny");
        assert!(outcomes.iter().any(|o| !o.deny), "n={n}: no allow");
        if n >= 10 {
            // Some deny is won by a scoped policy, not just by the all-runs ones.
            let scoped_win = outcomes
                .iter()
                .filter_map(|o| o.winning_policy.as_ref())
                .any(|w| set.iter().any(|p| &p.id == w && !p.agent_ids.is_empty()));
            assert!(scoped_win, "n={n}: no scoped policy ever wins");
            assert!(outcomes.iter().any(|o| o.breaching > 1), "n={n}: never more than one breach");
        }
    }
}

#[test]
fn exact_limits_allow_and_one_over_denies() {
    for n in SIZES {
        let set = policies(n);
        let reqs = requests(n);
        // Requests 5 and 6 sit on, then one token over, the tightest applicable limits.
        assert!(!reference_outcome(&set, &reqs[5]).deny, "n={n}");
        assert!(reference_outcome(&set, &reqs[6]).deny, "n={n}");
        let cedar = CedarEquivalent::new(&set).unwrap();
        let rego = RegoEquivalent::new(&set).unwrap();
        let rvm = RegoVmEquivalent::new(&set).unwrap();
        for req in &reqs[5..7] {
            assert_eq!(rvm.decide(req).unwrap(), reference_outcome(&set, req));
            assert_eq!(cedar.decide(req).unwrap(), reference_outcome(&set, req));
            assert_eq!(rego.decide(req).unwrap(), reference_outcome(&set, req));
        }
    }
}
