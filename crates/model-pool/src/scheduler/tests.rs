//! Deterministic tests of the pure state machine: events in, effects out, time injected.
//! Nothing here sleeps or spawns; each test is one policy or one fault, named after it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::device::DeviceId;
use crate::error::{PoolError, QueueKind, TimeoutPhase};
use crate::governor::{MemoryGovernor, Reservation};
use crate::size::GIB;
use crate::spec::{ModelSpec, Tier};
use crate::status::ModelStateKind;

const CPU: DeviceId = DeviceId::Cpu;
const SECOND: Duration = Duration::from_secs(1);

/// What a step did, in a form tests can compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fx {
    Load(u32),
    Abort(u32),
    Install(u32),
    Discard(u32),
    Unload(u32, UnloadReason),
    Grant(u64, u32),
    Reject(u64),
    ShutdownComplete,
}

struct Harness {
    m: Scheduler,
    gov: MemoryGovernor,
    now: Instant,
    next_request: u64,
    leases: HashMap<u64, (ModelId, LeaseId, Reservation)>,
    loads: HashMap<u32, LoadId>,
    unloading: HashSet<u32>,
    errors: HashMap<u64, PoolError>,
    shutdown_complete: bool,
}

fn warm(key: &str, resident_gib: u64, per_request_gib: u64) -> ModelSpec {
    ModelSpec::new(key, CPU, resident_gib * GIB, per_request_gib * GIB)
}

impl Harness {
    fn new(budget_gib: u64, specs: Vec<ModelSpec>) -> Self {
        Self::with_config(budget_gib, specs, SchedulerConfig::default())
    }

    fn with_config(budget_gib: u64, specs: Vec<ModelSpec>, config: SchedulerConfig) -> Self {
        let gov = MemoryGovernor::with_budgets([(CPU, budget_gib * GIB)]).unwrap();
        let now = Instant::now();
        let mut h = Harness {
            m: Scheduler::new(gov.clone(), config, specs, now),
            gov,
            now,
            next_request: 1,
            leases: HashMap::new(),
            loads: HashMap::new(),
            unloading: HashSet::new(),
            errors: HashMap::new(),
            shutdown_complete: false,
        };
        h.step(Event::Tick);
        h
    }

    fn step(&mut self, event: Event) -> Vec<Fx> {
        let effects = self.m.handle(event, self.now);
        let mut out = Vec::new();
        for e in effects {
            out.push(match e {
                Effect::StartLoad { model, load } => {
                    assert!(
                        self.loads.insert(model.0, load).is_none(),
                        "two loads of one model at once"
                    );
                    Fx::Load(model.0)
                }
                Effect::AbortLoad { model, .. } => Fx::Abort(model.0),
                Effect::Install { model, .. } => Fx::Install(model.0),
                Effect::Discard { model, .. } => Fx::Discard(model.0),
                Effect::StartUnload { model, reason } => {
                    assert!(
                        self.leases.values().all(|(m, ..)| *m != model),
                        "unloading a model with a lease"
                    );
                    assert!(self.unloading.insert(model.0));
                    Fx::Unload(model.0, reason)
                }
                Effect::Grant {
                    request,
                    model,
                    lease,
                    reservation,
                } => {
                    self.leases.insert(request.0, (model, lease, reservation));
                    Fx::Grant(request.0, model.0)
                }
                Effect::Reject { request, error } => {
                    self.errors.insert(request.0, error);
                    Fx::Reject(request.0)
                }
                Effect::ShutdownComplete => {
                    self.shutdown_complete = true;
                    Fx::ShutdownComplete
                }
            });
        }
        self.check_invariants();
        out
    }

    /// Reserved never exceeds the budget, and equals exactly what models and leases hold.
    fn check_invariants(&self) {
        let reserved = self.gov.reserved(CPU).unwrap();
        assert!(
            reserved <= self.gov.budget(CPU).unwrap(),
            "reserved {reserved} over budget"
        );
        let held: u64 = self.m.entries.iter().map(Entry::held_bytes).sum();
        let leased: u64 = self.leases.values().map(|(_, _, r)| r.bytes()).sum();
        assert_eq!(reserved, held + leased, "governor and scheduler disagree");
        let counted: u64 = self.m.entries.iter().map(Entry::leased_bytes).sum();
        assert_eq!(
            counted, leased,
            "the scheduler's lease bytes are the leases' reservations"
        );
        for e in &self.m.entries {
            assert!(e.leases.len() <= e.spec.max_concurrency);
            assert!(e.queue.len() <= e.spec.max_queue);
            if !e.leases.is_empty() {
                assert!(
                    matches!(e.state, State::Ready),
                    "{} has leases while {:?}",
                    e.spec.key,
                    e.state
                );
            }
        }
        assert_eq!(
            self.m.waiters.len(),
            self.m.entries.iter().map(|e| e.queue.len()).sum::<usize>()
        );
        assert_eq!(self.m.waiters.len(), self.m.deadlines.len());
    }

    fn acquire(&mut self, model: u32) -> (u64, Vec<Fx>) {
        self.acquire_timeout(model, None)
    }

    fn acquire_timeout(&mut self, model: u32, timeout: Option<Duration>) -> (u64, Vec<Fx>) {
        self.acquire_with(model, timeout, None)
    }

    fn acquire_sized(&mut self, model: u32, bytes: u64) -> (u64, Vec<Fx>) {
        self.acquire_with(model, None, Some(bytes))
    }

    fn acquire_with(
        &mut self,
        model: u32,
        timeout: Option<Duration>,
        bytes: Option<u64>,
    ) -> (u64, Vec<Fx>) {
        let request = self.next_request;
        self.next_request += 1;
        let fx = self.step(Event::Acquire {
            request: RequestId(request),
            model: ModelId(model),
            timeout,
            bytes,
        });
        (request, fx)
    }

    fn release(&mut self, request: u64) -> Vec<Fx> {
        let (model, lease, reservation) = self.leases.remove(&request).expect("no such lease");
        drop(reservation);
        self.step(Event::LeaseReleased { model, lease })
    }

    fn cancel(&mut self, request: u64) -> Vec<Fx> {
        self.step(Event::Cancel {
            request: RequestId(request),
        })
    }

    fn finish_load(&mut self, model: u32, outcome: LoadOutcome) -> Vec<Fx> {
        let load = self.loads.remove(&model).expect("no load in flight");
        self.step(Event::LoadFinished {
            model: ModelId(model),
            load,
            outcome,
        })
    }

    fn loaded(&mut self, model: u32) -> Vec<Fx> {
        self.finish_load(
            model,
            LoadOutcome::Loaded {
                measured_bytes: None,
            },
        )
    }

    fn finish_unload(&mut self, model: u32) -> Vec<Fx> {
        assert!(
            self.unloading.remove(&model),
            "model {model} is not unloading"
        );
        self.step(Event::UnloadFinished {
            model: ModelId(model),
            outcome: Ok(()),
        })
    }

    fn advance(&mut self, by: Duration) -> Vec<Fx> {
        self.now += by;
        self.step(Event::Tick)
    }

    fn state(&self, model: u32) -> ModelStateKind {
        self.m.state(ModelId(model)).unwrap()
    }

    fn reserved_gib(&self) -> f64 {
        self.gov.reserved(CPU).unwrap() as f64 / GIB as f64
    }

    /// Loads `model` for one request and releases it, leaving it loaded and idle.
    fn warm_up(&mut self, model: u32) {
        let (r, fx) = self.acquire(model);
        assert_eq!(fx, vec![Fx::Load(model)]);
        assert_eq!(
            self.loaded(model),
            vec![Fx::Install(model), Fx::Grant(r, model)]
        );
        self.release(r);
        assert_eq!(self.state(model), ModelStateKind::Ready);
    }
}

// ---------------------------------------------------------------- admission and sharing

#[test]
fn loaded_model_with_a_free_slot_is_granted_immediately() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1)]);
    h.warm_up(0);
    let (r, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Grant(r, 0)]);
    assert_eq!(h.reserved_gib(), 5.0);
}

#[test]
fn concurrent_requests_share_one_single_flight_load() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1)]);
    let (r1, fx1) = h.acquire(0);
    let (r2, fx2) = h.acquire(0);
    let (r3, fx3) = h.acquire(0);
    assert_eq!((fx1, fx2, fx3), (vec![Fx::Load(0)], vec![], vec![]));
    assert_eq!(h.state(0), ModelStateKind::Loading);
    assert_eq!(
        h.reserved_gib(),
        5.0,
        "resident plus the first request, reserved up front"
    );
    let fx = h.loaded(0);
    assert_eq!(
        fx,
        vec![
            Fx::Install(0),
            Fx::Grant(r1, 0),
            Fx::Grant(r2, 0),
            Fx::Grant(r3, 0)
        ]
    );
    assert_eq!(
        h.reserved_gib(),
        7.0,
        "weights once, working memory per request"
    );
}

#[test]
fn concurrency_is_bounded_by_memory_and_by_the_cap() {
    // Memory allows 6 concurrent requests; the cap allows 3.
    let mut h = Harness::new(10, vec![warm("a", 4, 1).max_concurrency(3)]);
    h.warm_up(0);
    let grants: Vec<_> = (0..5).map(|_| h.acquire(0)).collect();
    let granted: Vec<u64> = grants
        .iter()
        .filter(|(_, fx)| !fx.is_empty())
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(granted.len(), 3, "capped by max_concurrency");
    assert_eq!(h.release(granted[0]), vec![Fx::Grant(grants[3].0, 0)]);

    // Memory allows 2 concurrent requests (4 + 2×3 = 10); the cap allows 8.
    let mut h = Harness::new(10, vec![warm("b", 4, 3).max_concurrency(8)]);
    h.warm_up(0);
    let grants: Vec<_> = (0..3).map(|_| h.acquire(0)).collect();
    assert_eq!(
        grants.iter().filter(|(_, fx)| !fx.is_empty()).count(),
        2,
        "bounded by memory"
    );
    assert_eq!(h.release(grants[0].0), vec![Fx::Grant(grants[2].0, 0)]);
}

#[test]
fn model_that_can_never_fit_is_refused_without_eviction_loop() {
    let mut h = Harness::new(48, vec![warm("small", 4, 1), warm("kimi", 600, 100)]);
    h.warm_up(0);
    for _ in 0..3 {
        let (r, fx) = h.acquire(1);
        assert_eq!(
            fx,
            vec![Fx::Reject(r)],
            "refused at once, nothing evicted, nothing loaded"
        );
        match &h.errors[&r] {
            PoolError::NeverFits {
                model,
                need,
                budget,
                device,
            } => {
                assert_eq!(
                    (model.as_str(), need.0, budget.0, *device),
                    ("kimi", 700 * GIB, 48 * GIB, CPU)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        h.state(0),
        ModelStateKind::Ready,
        "the idle model was not evicted for a hopeless request"
    );
    assert_eq!(
        h.m.status(h.now)
            .model("kimi")
            .unwrap()
            .counters
            .rejected_never_fits,
        3
    );
}

// ---------------------------------------------------------------- eviction policy

// ---------------------------------------------------------------- requests of their own size

#[test]
fn a_request_of_its_own_size_is_admitted_by_that_size() {
    // a: 2 GiB resident, 1 GiB per request by default; a request of 6 GiB takes 6.
    let mut h = Harness::new(10, vec![warm("a", 2, 1), warm("b", 3, 1)]);
    h.warm_up(0);
    h.warm_up(1);
    assert_eq!(h.reserved_gib(), 5.0);
    // 2 + 3 + 6 > 10: b is idle and in the way, so it is evicted for the large request.
    let (r, fx) = h.acquire_sized(0, 6 * GIB);
    assert_eq!(fx, vec![Fx::Unload(1, UnloadReason::Evicted)]);
    assert_eq!(h.finish_unload(1), vec![Fx::Grant(r, 0)]);
    assert_eq!(h.reserved_gib(), 8.0, "a's weights and the 6 GiB request");
    h.release(r);
    assert_eq!(h.reserved_gib(), 2.0, "the whole 6 GiB came back");
    // A small request is served beside it at its own size.
    let (small, fx) = h.acquire_sized(0, GIB / 2);
    assert_eq!(fx, vec![Fx::Grant(small, 0)]);
    assert_eq!(h.reserved_gib(), 2.5);
}

#[test]
fn a_request_too_large_for_the_budget_never_fits_whatever_the_default_size() {
    let mut h = Harness::new(10, vec![warm("a", 2, 1)]);
    let (r, fx) = h.acquire_sized(0, 9 * GIB);
    assert_eq!(fx, vec![Fx::Reject(r)]);
    assert!(
        matches!(h.errors[&r], PoolError::NeverFits { need, .. } if need.0 == 11 * GIB),
        "{:?}",
        h.errors[&r]
    );
    // The default-size request still fits.
    let (ok, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Load(0)]);
    assert_eq!(h.loaded(0), vec![Fx::Install(0), Fx::Grant(ok, 0)]);
}

#[test]
fn the_memory_reserved_with_a_load_follows_the_waiter_that_gets_it() {
    let mut h = Harness::new(10, vec![warm("a", 2, 1)]);
    // The load reserves 2 + 4 for the first waiter; it leaves, a smaller one is next.
    let (big, fx) = h.acquire_sized(0, 4 * GIB);
    assert_eq!(fx, vec![Fx::Load(0)]);
    let (small, fx) = h.acquire_sized(0, GIB);
    assert!(fx.is_empty());
    h.cancel(big);
    assert_eq!(h.loaded(0), vec![Fx::Install(0), Fx::Grant(small, 0)]);
    assert_eq!(
        h.reserved_gib(),
        3.0,
        "the lease holds its own 1 GiB, not the 4 reserved"
    );
    h.release(small);
    // Reserved for a small waiter, taken over by a larger one: the pump reserves the rest.
    let (a, _) = h.acquire_sized(0, GIB);
    h.release(a);
}

#[test]
fn idle_models_are_evicted_least_recently_used_first() {
    let mut h = Harness::new(10, vec![warm("a", 4, 0), warm("b", 4, 0), warm("c", 4, 0)]);
    h.warm_up(0);
    h.now += SECOND;
    h.warm_up(1);
    h.now += SECOND;
    let (_, fx) = h.acquire(2);
    assert_eq!(
        fx,
        vec![Fx::Unload(0, UnloadReason::Evicted)],
        "a was used longest ago"
    );
    assert_eq!(h.finish_unload(0), vec![Fx::Load(2)]);
}

#[test]
fn lower_priority_model_is_evicted_before_higher_priority() {
    let mut h = Harness::new(
        10,
        vec![
            warm("low", 4, 0).priority(-1),
            warm("high", 4, 0).priority(5),
            warm("new", 4, 0),
        ],
    );
    h.warm_up(0);
    h.now += SECOND;
    h.warm_up(1);
    h.now += SECOND;
    // Touch "low" so that LRU alone would pick "high".
    let (r, _) = h.acquire(0);
    h.release(r);
    let (_, fx) = h.acquire(2);
    assert_eq!(fx, vec![Fx::Unload(0, UnloadReason::Evicted)]);
}

#[test]
fn warm_models_are_evicted_before_unpinned_hot_models() {
    let hot = warm("hot", 4, 0).tier(Tier::Hot { pinned: false });
    let mut h = Harness::new(10, vec![hot, warm("warm", 4, 0), warm("new", 4, 0)]);
    assert_eq!(
        h.loaded(0),
        vec![Fx::Install(0)],
        "hot models are preloaded"
    );
    h.now += SECOND;
    h.warm_up(1);
    let (_, fx) = h.acquire(2);
    assert_eq!(
        fx,
        vec![Fx::Unload(1, UnloadReason::Evicted)],
        "the warm one goes although the hot one is older"
    );
}

#[test]
fn size_aware_eviction_unloads_one_large_model_instead_of_many_small() {
    let specs = vec![
        warm("s1", 1, 0),
        warm("s2", 1, 0),
        warm("s3", 1, 0),
        warm("large", 6, 0),
        warm("new", 7, 0),
    ];
    let mut h = Harness::new(10, specs);
    for m in 0..4 {
        h.warm_up(m);
        h.now += SECOND;
    }
    assert_eq!(h.reserved_gib(), 9.0);
    let (_, fx) = h.acquire(4);
    assert_eq!(
        fx,
        vec![Fx::Unload(3, UnloadReason::Evicted)],
        "one eviction frees enough; three would be waste"
    );
}

#[test]
fn model_holding_a_lease_is_never_evicted() {
    let mut h = Harness::new(10, vec![warm("busy", 6, 1), warm("new", 6, 1)]);
    let (lease, _) = h.acquire(0);
    h.loaded(0);
    let (waiting, fx) = h.acquire(1);
    assert_eq!(
        fx,
        vec![],
        "no eviction while a lease is held: the request waits"
    );
    assert_eq!(h.state(0), ModelStateKind::Ready);
    // The lease ends: now "busy" is idle and can go.
    assert_eq!(h.release(lease), vec![Fx::Unload(0, UnloadReason::Evicted)]);
    assert_eq!(h.finish_unload(0), vec![Fx::Load(1)]);
    assert_eq!(h.loaded(1), vec![Fx::Install(1), Fx::Grant(waiting, 1)]);
}

#[test]
fn busy_model_in_the_way_is_drained_not_evicted_mid_request() {
    let mut h = Harness::new(10, vec![warm("busy", 4, 1), warm("big", 6, 1)]);
    let (running, _) = h.acquire(0);
    h.loaded(0);
    let (big, fx) = h.acquire(1);
    assert_eq!(
        fx,
        vec![],
        "busy holds a lease: it is not unloaded under it"
    );
    let (late, fx) = h.acquire(0);
    assert_eq!(
        fx,
        vec![],
        "busy has a free slot and memory, but drains for the older request"
    );
    assert_eq!(
        h.release(running),
        vec![Fx::Unload(0, UnloadReason::Evicted)]
    );
    assert_eq!(h.finish_unload(0), vec![Fx::Load(1)]);
    assert_eq!(h.loaded(1), vec![Fx::Install(1), Fx::Grant(big, 1)]);
    // The drained model's request is served once the big one is idle again.
    assert_eq!(h.release(big), vec![Fx::Unload(1, UnloadReason::Evicted)]);
    assert_eq!(h.finish_unload(1), vec![Fx::Load(0)]);
    assert_eq!(h.loaded(0), vec![Fx::Install(0), Fx::Grant(late, 0)]);
}

#[test]
fn loaded_model_not_in_the_way_keeps_serving_while_a_large_request_waits() {
    // 10 GiB: "tiny" (pinned, 1+1) and "busy" (4+1, one lease) are loaded, 4 GiB are free;
    // "big" needs 6. Draining "busy" returns 5, so "big" needs only 1 of the free GiB and
    // "tiny" keeps serving from the other 3 instead of stalling behind "big".
    let mut h = Harness::new(
        10,
        vec![
            warm("tiny", 1, 1).pinned(),
            warm("busy", 4, 1),
            warm("big", 5, 1),
        ],
    );
    h.loaded(0);
    let (running, _) = h.acquire(1);
    h.loaded(1);
    let (_big, fx) = h.acquire(2);
    assert_eq!(fx, vec![]);
    let tiny: Vec<_> = (0..4).map(|_| h.acquire(0)).collect();
    let granted = tiny
        .iter()
        .filter(|(r, fx)| *fx == vec![Fx::Grant(*r, 0)])
        .count();
    assert_eq!(
        granted, 3,
        "three requests fit in the slack, the fourth would eat into big's share"
    );
    assert_eq!(
        h.release(running),
        vec![Fx::Unload(1, UnloadReason::Evicted)]
    );
}

#[test]
fn pinned_model_is_never_evicted() {
    let mut h = Harness::new(10, vec![warm("pinned", 6, 1).pinned(), warm("other", 3, 1)]);
    assert_eq!(h.loaded(0), vec![Fx::Install(0)], "preloaded at start");
    // Use it and let it idle for an hour: no TTL applies.
    let (r, _) = h.acquire(0);
    h.release(r);
    assert_eq!(h.advance(Duration::from_secs(3600)), vec![]);
    // Another model that fits next to it is served without touching it.
    let (r, fx) = h.acquire(1);
    assert_eq!(fx, vec![Fx::Load(1)]);
    h.loaded(1);
    h.release(r);
    assert_eq!(h.state(0), ModelStateKind::Ready);
}

#[test]
fn load_that_would_need_to_evict_a_pinned_model_fails_cleanly() {
    let mut h = Harness::new(10, vec![warm("pinned", 6, 1).pinned(), warm("big", 5, 1)]);
    h.loaded(0);
    let (r, fx) = h.acquire(1);
    assert_eq!(fx, vec![Fx::Reject(r)]);
    match &h.errors[&r] {
        PoolError::BlockedByPinned {
            model,
            need,
            budget,
            pinned,
            device,
        } => {
            assert_eq!(
                (model.as_str(), need.0, budget.0, pinned.0, *device),
                ("big", 6 * GIB, 10 * GIB, 6 * GIB, CPU)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.state(0), ModelStateKind::Ready);
}

#[test]
fn memory_a_higher_priority_waiter_needs_is_not_taken_by_a_lower_priority_one() {
    // "busy" holds 6 of 10 GiB through a lease. "important" (6) waits for it to drain;
    // "filler" (5) would fit into the 4 free GiB plus what "busy" returns, but that memory
    // is promised to "important" first.
    let specs = vec![
        warm("busy", 5, 1),
        warm("important", 5, 1).priority(10),
        warm("filler", 4, 1),
    ];
    let mut h = Harness::new(10, specs);
    let (lease, _) = h.acquire(0);
    h.loaded(0);
    let (important, fx) = h.acquire(1);
    assert_eq!(fx, vec![]);
    let (filler, fx) = h.acquire(2);
    assert_eq!(fx, vec![], "filler waits its turn");
    assert_eq!(h.release(lease), vec![Fx::Unload(0, UnloadReason::Evicted)]);
    assert_eq!(h.finish_unload(0), vec![Fx::Load(1)], "important first");
    assert_eq!(h.loaded(1), vec![Fx::Install(1), Fx::Grant(important, 1)]);
    // The lease's memory completes the 5 GiB filler needs.
    assert_eq!(h.release(important), vec![Fx::Load(2)]);
    assert_eq!(h.loaded(2), vec![Fx::Install(2), Fx::Grant(filler, 2)]);
}

#[test]
fn requests_behind_a_blocked_model_only_use_the_slack() {
    // "big" (8) waits for "busy" (3+1) to drain: that returns 4, so "big" also needs 4 of
    // the 6 free GiB. The 2 left are slack: "tiny" (1) loads at once, "mid" (3) would fit
    // in the free memory but not in the slack, so it waits instead of delaying "big".
    let specs = vec![
        warm("busy", 3, 1),
        warm("big", 7, 1),
        warm("mid", 2, 1),
        warm("tiny", 1, 0),
    ];
    let mut h = Harness::new(10, specs);
    let (lease, _) = h.acquire(0);
    h.loaded(0);
    let (_big, fx) = h.acquire(1);
    assert_eq!(fx, vec![]);
    let (_tiny, fx) = h.acquire(3);
    assert_eq!(fx, vec![Fx::Load(3)]);
    let (_mid, fx) = h.acquire(2);
    assert_eq!(fx, vec![]);
    assert_eq!(h.release(lease), vec![Fx::Unload(0, UnloadReason::Evicted)]);
}

// ---------------------------------------------------------------- tiers and TTL

#[test]
fn evicted_hot_model_returns_only_when_room_is_free_again() {
    // Without this rule the hot model's preload would evict the model that just evicted it,
    // and the two would take turns forever.
    let hot = warm("hot", 5, 0).tier(Tier::Hot { pinned: false });
    let mut h = Harness::new(10, vec![hot, warm("big", 8, 0).idle_ttl(Duration::ZERO)]);
    h.loaded(0);
    let (r, fx) = h.acquire(1);
    assert_eq!(fx, vec![Fx::Unload(0, UnloadReason::Evicted)]);
    assert_eq!(
        h.finish_unload(0),
        vec![Fx::Load(1)],
        "the request goes first; the preload waits"
    );
    assert_eq!(h.loaded(1), vec![Fx::Install(1), Fx::Grant(r, 1)]);
    assert_eq!(h.release(r), vec![Fx::Unload(1, UnloadReason::IdleTimeout)]);
    assert_eq!(
        h.finish_unload(1),
        vec![Fx::Load(0)],
        "back once the memory is free"
    );
}

#[test]
fn pinned_model_whose_load_failed_makes_room_when_it_retries() {
    // Each warm model fits beside the pinned one, but not both together.
    let mut h = Harness::new(
        10,
        vec![
            warm("pinned", 5, 0).pinned(),
            warm("w1", 4, 0),
            warm("w2", 4, 0),
        ],
    );
    h.finish_load(0, LoadOutcome::Failed("transient".into()));
    h.warm_up(1);
    h.now += Duration::from_millis(100);
    h.warm_up(2);
    assert_eq!(
        h.advance(SECOND),
        vec![Fx::Unload(1, UnloadReason::Evicted)]
    );
    assert_eq!(h.finish_unload(1), vec![Fx::Load(0)]);
}

#[test]
fn hot_models_are_preloaded_at_start() {
    let mut h = Harness::new(10, vec![warm("hot", 4, 1).pinned(), warm("warm", 4, 1)]);
    assert_eq!(h.state(0), ModelStateKind::Loading);
    assert_eq!(h.state(1), ModelStateKind::Unloaded);
    assert_eq!(
        h.reserved_gib(),
        4.0,
        "a preload reserves the resident bytes only"
    );
    assert_eq!(h.loaded(0), vec![Fx::Install(0)]);
}

#[test]
fn a_hot_model_keeps_loading_when_a_waiter_gives_up() {
    let mut h = Harness::new(
        10,
        vec![warm("hot", 4, 1).tier(Tier::Hot { pinned: false })],
    );
    assert_eq!(h.state(0), ModelStateKind::Loading, "preloading");
    let (r, fx) = h.acquire(0);
    assert!(fx.is_empty(), "waits for the preload");
    assert!(
        h.cancel(r).is_empty(),
        "no abort: the model is meant to be resident"
    );
    assert_eq!(
        h.m.status(h.now).model("hot").unwrap().counters.load_aborts,
        0
    );
    assert_eq!(h.loaded(0), vec![Fx::Install(0)]);
    assert_eq!(h.state(0), ModelStateKind::Ready);
}

#[test]
fn ttl_zero_unloads_when_last_lease_drops() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1).idle_ttl(Duration::ZERO)]);
    let (r1, _) = h.acquire(0);
    let (r2, _) = h.acquire(0);
    h.loaded(0);
    assert_eq!(h.release(r1), vec![], "one lease still held");
    assert_eq!(
        h.release(r2),
        vec![Fx::Unload(0, UnloadReason::IdleTimeout)]
    );
    h.finish_unload(0);
    assert_eq!(h.reserved_gib(), 0.0);
}

#[test]
fn idle_ttl_starts_when_the_last_lease_is_released() {
    let ttl = Duration::from_secs(300);
    let mut h = Harness::new(10, vec![warm("a", 4, 1).idle_ttl(ttl)]);
    let (r, _) = h.acquire(0);
    h.loaded(0);
    // Held twice as long as the TTL: never unloaded under a lease.
    assert_eq!(h.advance(2 * ttl), vec![]);
    h.release(r);
    assert_eq!(h.m.next_deadline(), Some(h.now + ttl));
    assert_eq!(h.advance(ttl - SECOND), vec![]);
    assert_eq!(
        h.advance(SECOND),
        vec![Fx::Unload(0, UnloadReason::IdleTimeout)]
    );
}

#[test]
fn request_during_the_idle_ttl_cancels_the_pending_unload() {
    let ttl = Duration::from_secs(60);
    let mut h = Harness::new(10, vec![warm("a", 4, 1).idle_ttl(ttl)]);
    h.warm_up(0);
    h.advance(ttl - SECOND);
    let (r, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Grant(r, 0)]);
    assert_eq!(h.advance(ttl), vec![], "no unload while leased");
    h.release(r);
    assert_eq!(
        h.advance(ttl),
        vec![Fx::Unload(0, UnloadReason::IdleTimeout)]
    );
}

// ---------------------------------------------------------------- queues and deadlines

#[test]
fn full_queue_returns_busy_with_retry_after() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1).max_queue(2)]);
    let (_r1, _) = h.acquire(0);
    let (_r2, _) = h.acquire(0);
    let (r3, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Reject(r3)]);
    match &h.errors[&r3] {
        PoolError::Busy {
            model,
            queue,
            limit,
            retry_after,
        } => {
            assert_eq!((model.as_str(), *queue, *limit), ("a", QueueKind::Model, 2));
            assert!(*retry_after > Duration::ZERO);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(h.errors[&r3].retry_after().is_some());
}

#[test]
fn busy_retry_after_follows_observed_lease_times() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1).max_concurrency(1).max_queue(1)]);
    h.warm_up(0);
    let (r, _) = h.acquire(0);
    h.now += Duration::from_millis(400);
    h.release(r);
    let (_running, _) = h.acquire(0);
    let (_queued, _) = h.acquire(0);
    let (busy, _) = h.acquire(0);
    // The warm-up lease took 0 ms, the second 400 ms: the smoothed hold time is 50 ms, and
    // one request is ahead per slot.
    assert_eq!(
        h.errors[&busy].retry_after(),
        Some(Duration::from_millis(100))
    );
}

#[test]
fn queue_limit_applies_to_loaded_models_too() {
    // Ollama issue 7758: the queue bound was ignored once the model was loaded.
    let mut h = Harness::new(10, vec![warm("a", 4, 1).max_concurrency(1).max_queue(1)]);
    h.warm_up(0);
    let (running, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Grant(running, 0)]);
    let (_queued, fx) = h.acquire(0);
    assert_eq!(fx, vec![]);
    let (refused, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Reject(refused)]);
    assert!(matches!(
        h.errors[&refused],
        PoolError::Busy {
            queue: QueueKind::Model,
            ..
        }
    ));
}

#[test]
fn global_queue_limit_returns_busy() {
    let config = SchedulerConfig {
        max_queued_total: 2,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::with_config(10, vec![warm("a", 4, 1), warm("b", 4, 1)], config);
    h.acquire(0);
    h.acquire(1);
    let (r, fx) = h.acquire(1);
    assert_eq!(fx, vec![Fx::Reject(r)]);
    assert!(matches!(
        h.errors[&r],
        PoolError::Busy {
            queue: QueueKind::Global,
            limit: 2,
            ..
        }
    ));
}

#[test]
fn absurd_timeouts_and_ttls_mean_never_instead_of_a_panic() {
    let config = SchedulerConfig {
        load_timeout: Duration::MAX,
        failure_backoff_max: Duration::MAX,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::with_config(10, vec![warm("a", 4, 1).idle_ttl(Duration::MAX)], config);
    let (r, fx) = h.acquire_timeout(0, Some(Duration::MAX));
    assert_eq!(fx, vec![Fx::Load(0)]);
    h.loaded(0);
    h.release(r);
    assert_eq!(h.advance(Duration::from_secs(365 * 24 * 3600)), vec![]);
    assert_eq!(h.state(0), ModelStateKind::Ready);
}

#[test]
fn queued_request_times_out_with_a_typed_error() {
    let mut h = Harness::new(
        10,
        vec![warm("busy", 6, 1).max_concurrency(1), warm("other", 6, 1)],
    );
    let (lease, _) = h.acquire(0);
    h.loaded(0);
    let (waiting, _) = h.acquire_timeout(1, Some(Duration::from_secs(5)));
    assert_eq!(h.m.next_deadline(), Some(h.now + Duration::from_secs(5)));
    assert_eq!(h.advance(Duration::from_secs(4)), vec![]);
    assert_eq!(h.advance(SECOND), vec![Fx::Reject(waiting)]);
    assert_eq!(
        h.errors[&waiting],
        PoolError::Timeout {
            model: "other".into(),
            phase: TimeoutPhase::Queued,
            waited: Duration::from_secs(5)
        }
    );
    assert_eq!(
        h.release(lease),
        vec![],
        "nobody waits any more: nothing is evicted"
    );
    assert_eq!(
        h.m.status(h.now)
            .model("other")
            .unwrap()
            .counters
            .queue_timeouts,
        1
    );
}

#[test]
fn cancelled_waiter_frees_queue_slot_and_aborts_load() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1).max_queue(1)]);
    let (r, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Load(0)]);
    assert_eq!(
        h.cancel(r),
        vec![Fx::Abort(0)],
        "nobody else waits: the load is aborted"
    );
    assert_eq!(h.m.queued(), 0);
    // The abort completes: memory is back, the model can be asked for again.
    assert_eq!(h.finish_load(0, LoadOutcome::Aborted), vec![]);
    assert_eq!(h.reserved_gib(), 0.0);
    assert_eq!(h.state(0), ModelStateKind::Unloaded);
    let (r2, fx) = h.acquire(0);
    assert_eq!(fx, vec![Fx::Load(0)], "the freed queue slot is usable");
    h.loaded(0);
    assert!(h.leases.contains_key(&r2));
}

#[test]
fn cancelled_waiter_keeps_the_load_others_wait_for() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1)]);
    let (r1, _) = h.acquire(0);
    let (r2, _) = h.acquire(0);
    assert_eq!(h.cancel(r1), vec![]);
    assert_eq!(
        h.loaded(0),
        vec![Fx::Install(0), Fx::Grant(r2, 0)],
        "the first request's memory goes to the next"
    );
    assert_eq!(h.reserved_gib(), 5.0);
}

#[test]
fn request_arriving_while_its_load_is_being_aborted_reloads_after_the_abort() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1)]);
    let (r1, _) = h.acquire(0);
    h.cancel(r1);
    let (r2, fx) = h.acquire(0);
    assert_eq!(fx, vec![], "waits for the abort to finish");
    assert_eq!(h.finish_load(0, LoadOutcome::Aborted), vec![Fx::Load(0)]);
    assert_eq!(h.loaded(0), vec![Fx::Install(0), Fx::Grant(r2, 0)]);
}

#[test]
fn load_that_finishes_after_its_abort_was_requested_becomes_an_idle_model() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1).idle_ttl(Duration::from_secs(10))]);
    let (r, _) = h.acquire(0);
    h.cancel(r);
    assert_eq!(h.loaded(0), vec![Fx::Install(0)]);
    assert_eq!(
        h.reserved_gib(),
        4.0,
        "the first request's memory was returned"
    );
    assert_eq!(
        h.advance(Duration::from_secs(10)),
        vec![Fx::Unload(0, UnloadReason::IdleTimeout)]
    );
}

// ---------------------------------------------------------------- load faults

#[test]
fn load_error_fails_waiters_and_returns_memory() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1), warm("b", 4, 1)]);
    let (r1, _) = h.acquire(0);
    let (r2, _) = h.acquire(0);
    assert_eq!(
        h.finish_load(0, LoadOutcome::Failed("file not found".into())),
        vec![Fx::Reject(r1), Fx::Reject(r2)]
    );
    assert!(
        matches!(&h.errors[&r1], PoolError::LoadFailed { attempts: 1, message, .. } if message == "file not found")
    );
    assert_eq!(h.reserved_gib(), 0.0);
    assert_eq!(h.state(0), ModelStateKind::Failed);
    // Other models are unaffected.
    let (r, fx) = h.acquire(1);
    assert_eq!(fx, vec![Fx::Load(1)]);
    h.loaded(1);
    assert!(h.leases.contains_key(&r));
}

#[test]
fn load_panic_returns_memory_and_pool_keeps_serving() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1), warm("b", 4, 1)]);
    let (r, _) = h.acquire(0);
    assert_eq!(
        h.finish_load(0, LoadOutcome::Panicked("index out of bounds".into())),
        vec![Fx::Reject(r)]
    );
    assert!(matches!(&h.errors[&r], PoolError::LoadPanicked { model, .. } if model == "a"));
    assert_eq!(h.reserved_gib(), 0.0);
    h.warm_up(1);
    assert_eq!(
        h.m.status(h.now).model("a").unwrap().counters.load_panics,
        1
    );
}

#[test]
fn repeated_load_failures_cool_down_with_exponential_backoff() {
    let mut h = Harness::new(10, vec![warm("flaky", 4, 1)]);
    for (attempt, backoff) in [(1u32, 1u64), (2, 2), (3, 4), (4, 8)] {
        let (r, fx) = h.acquire(0);
        assert_eq!(fx, vec![Fx::Load(0)], "attempt {attempt}");
        h.finish_load(0, LoadOutcome::Failed("driver error".into()));
        assert_eq!(
            h.errors[&r].retry_after(),
            Some(Duration::from_secs(backoff))
        );
        // During the cooldown a request is refused at once, with the time left.
        h.now += Duration::from_secs(backoff) / 2;
        let (early, fx) = h.acquire(0);
        assert_eq!(fx, vec![Fx::Reject(early)]);
        match &h.errors[&early] {
            PoolError::CoolingDown {
                attempts,
                retry_after,
                last_error,
                ..
            } => {
                assert_eq!(*attempts, attempt);
                assert_eq!(*retry_after, Duration::from_secs(backoff) / 2);
                assert!(last_error.contains("driver error"));
            }
            other => panic!("unexpected {other:?}"),
        }
        h.now += Duration::from_secs(backoff) / 2;
    }
    // A success resets the count.
    let (r, _) = h.acquire(0);
    h.loaded(0);
    h.release(r);
    assert_eq!(
        h.m.status(h.now)
            .model("flaky")
            .unwrap()
            .consecutive_failures,
        0
    );
}

#[test]
fn hung_load_times_out_fails_its_waiters_and_returns_memory() {
    let config = SchedulerConfig {
        load_timeout: Duration::from_secs(60),
        ..SchedulerConfig::default()
    };
    let mut h = Harness::with_config(10, vec![warm("a", 4, 1)], config);
    let (r, _) = h.acquire_timeout(0, Some(Duration::from_secs(3600)));
    assert_eq!(h.m.next_deadline(), Some(h.now + Duration::from_secs(60)));
    assert_eq!(h.advance(Duration::from_secs(60)), vec![Fx::Abort(0)]);
    assert_eq!(h.finish_load(0, LoadOutcome::Aborted), vec![Fx::Reject(r)]);
    assert!(
        matches!(&h.errors[&r], PoolError::LoadFailed { message, .. } if message.contains("did not finish"))
    );
    assert_eq!(
        (h.reserved_gib(), h.state(0)),
        (0.0, ModelStateKind::Failed)
    );
}

#[test]
fn out_of_memory_load_evicts_idle_models_and_retries_once() {
    let mut h = Harness::new(
        20,
        vec![warm("idle1", 3, 0), warm("idle2", 3, 0), warm("big", 8, 1)],
    );
    h.warm_up(0);
    h.warm_up(1);
    let (r, fx) = h.acquire(2);
    assert_eq!(
        fx,
        vec![Fx::Load(2)],
        "fits by the estimate, so nothing is evicted first"
    );
    let fx = h.finish_load(
        2,
        LoadOutcome::OutOfMemory("CUDA_ERROR_OUT_OF_MEMORY".into()),
    );
    assert_eq!(
        fx,
        vec![
            Fx::Unload(0, UnloadReason::OutOfMemoryRecovery),
            Fx::Unload(1, UnloadReason::OutOfMemoryRecovery)
        ]
    );
    assert_eq!(h.finish_unload(0), vec![], "waits for every unload");
    assert_eq!(h.finish_unload(1), vec![Fx::Load(2)], "then retries once");
    assert_eq!(h.loaded(2), vec![Fx::Install(2), Fx::Grant(r, 2)]);
}

#[test]
fn second_out_of_memory_fails_with_a_typed_error() {
    let mut h = Harness::new(20, vec![warm("big", 8, 1), warm("other", 2, 1)]);
    let (r, _) = h.acquire(0);
    assert_eq!(
        h.finish_load(0, LoadOutcome::OutOfMemory("oom".into())),
        vec![Fx::Load(0)],
        "nothing idle: retry at once"
    );
    assert_eq!(
        h.finish_load(0, LoadOutcome::OutOfMemory("oom again".into())),
        vec![Fx::Reject(r)]
    );
    match &h.errors[&r] {
        PoolError::LoadOutOfMemory {
            model,
            need,
            budget,
            device,
            message,
            ..
        } => {
            assert_eq!(
                (model.as_str(), need.0, budget.0, *device),
                ("big", 9 * GIB, 20 * GIB, CPU)
            );
            assert_eq!(message, "oom again");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.reserved_gib(), 0.0);
    h.warm_up(1);
}

#[test]
fn all_waiters_leaving_during_out_of_memory_recovery_returns_the_memory() {
    let mut h = Harness::new(20, vec![warm("idle", 3, 0), warm("big", 8, 1)]);
    h.warm_up(0);
    let (r, _) = h.acquire(1);
    h.finish_load(1, LoadOutcome::OutOfMemory("oom".into()));
    h.cancel(r);
    assert_eq!(h.state(1), ModelStateKind::Unloaded);
    assert_eq!(h.finish_unload(0), vec![], "no retry for nobody");
    assert_eq!(h.reserved_gib(), 0.0);
}

#[test]
fn failed_pinned_model_is_retried_after_its_cooldown() {
    let mut h = Harness::new(10, vec![warm("pinned", 4, 1).pinned()]);
    assert_eq!(
        h.finish_load(0, LoadOutcome::Failed("disk busy".into())),
        vec![]
    );
    assert_eq!(h.m.next_deadline(), Some(h.now + SECOND));
    assert_eq!(h.advance(SECOND), vec![Fx::Load(0)]);
    assert_eq!(h.loaded(0), vec![Fx::Install(0)]);
}

#[test]
fn stale_load_result_is_discarded() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1)]);
    let fx = h.step(Event::LoadFinished {
        model: ModelId(0),
        load: LoadId(99),
        outcome: LoadOutcome::Loaded {
            measured_bytes: None,
        },
    });
    assert_eq!(fx, vec![Fx::Discard(0)]);
    assert_eq!(h.state(0), ModelStateKind::Unloaded);
}

#[test]
fn unload_failure_still_returns_memory() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1).idle_ttl(Duration::ZERO)]);
    let (r, _) = h.acquire(0);
    h.loaded(0);
    h.release(r);
    h.unloading.remove(&0);
    h.step(Event::UnloadFinished {
        model: ModelId(0),
        outcome: Err("driver refused".into()),
    });
    assert_eq!(h.reserved_gib(), 0.0);
    assert_eq!(h.m.status(h.now).totals.unload_failures, 1);
}

// ---------------------------------------------------------------- races

#[test]
fn eviction_race_request_for_model_being_evicted_does_not_deadlock() {
    // Ollama issue 17408: the model chosen for eviction gets a request mid-eviction. Here the
    // request waits for the unload to finish and then reloads through normal admission, which
    // evicts the model that caused the eviction once that one is idle.
    let mut h = Harness::new(10, vec![warm("victim", 6, 1), warm("newcomer", 6, 1)]);
    h.warm_up(0);
    let (newcomer, fx) = h.acquire(1);
    assert_eq!(fx, vec![Fx::Unload(0, UnloadReason::Evicted)]);
    let (victim, fx) = h.acquire(0);
    assert_eq!(
        fx,
        vec![],
        "queued behind the unload, not granted on a model being unloaded"
    );
    assert_eq!(
        h.finish_unload(0),
        vec![Fx::Load(1)],
        "the newcomer was first"
    );
    assert_eq!(h.loaded(1), vec![Fx::Install(1), Fx::Grant(newcomer, 1)]);
    assert_eq!(
        h.release(newcomer),
        vec![Fx::Unload(1, UnloadReason::Evicted)]
    );
    assert_eq!(h.finish_unload(1), vec![Fx::Load(0)]);
    assert_eq!(h.loaded(0), vec![Fx::Install(0), Fx::Grant(victim, 0)]);
}

#[test]
fn request_arriving_while_its_model_unloads_waits_then_reloads() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1).idle_ttl(Duration::from_secs(1))]);
    h.warm_up(0);
    assert_eq!(
        h.advance(SECOND),
        vec![Fx::Unload(0, UnloadReason::IdleTimeout)]
    );
    let (r, fx) = h.acquire(0);
    assert_eq!(fx, vec![]);
    assert_eq!(h.finish_unload(0), vec![Fx::Load(0)]);
    assert_eq!(h.loaded(0), vec![Fx::Install(0), Fx::Grant(r, 0)]);
}

#[test]
fn two_models_waiting_for_each_others_memory_both_get_served() {
    let mut h = Harness::new(
        10,
        vec![
            warm("a", 6, 1).max_concurrency(1),
            warm("b", 6, 1).max_concurrency(1),
        ],
    );
    let (a1, _) = h.acquire(0);
    h.loaded(0);
    let (b1, _) = h.acquire(1);
    let (a2, _) = h.acquire(0);
    let (b2, _) = h.acquire(1);
    let mut served = vec![a1];
    let mut releases = vec![a1];
    // Drive the machine: release whatever is granted, finish whatever starts.
    for _ in 0..20 {
        let Some(r) = releases.pop() else { break };
        let mut fx = h.release(r);
        while !fx.is_empty() {
            let mut next = Vec::new();
            for f in fx {
                match f {
                    Fx::Unload(m, _) => next.extend(h.finish_unload(m)),
                    Fx::Load(m) => next.extend(h.loaded(m)),
                    Fx::Grant(r, _) => {
                        served.push(r);
                        releases.push(r);
                    }
                    _ => {}
                }
            }
            fx = next;
        }
    }
    served.sort_unstable();
    assert_eq!(served, {
        let mut all = vec![a1, b1, a2, b2];
        all.sort_unstable();
        all
    });
}

// ---------------------------------------------------------------- status and shutdown

#[test]
fn measured_memory_above_the_estimate_is_flagged_in_status() {
    let mut h = Harness::new(10, vec![warm("a", 4, 1)]);
    let (_r, _) = h.acquire(0);
    h.finish_load(
        0,
        LoadOutcome::Loaded {
            measured_bytes: Some(5 * GIB),
        },
    );
    let status = h.m.status(h.now);
    let a = status.model("a").unwrap();
    assert_eq!(
        (a.measured_bytes, a.estimate_exceeded),
        (Some(5 * GIB), true)
    );
    assert_eq!(a.reserved_bytes, 5 * GIB);
    assert_eq!(a.leases, 1);
    assert_eq!(status.reserved_on(CPU), Some(5 * GIB));
}

#[test]
fn shutdown_fails_all_waiters_and_unloads_everything() {
    let mut h = Harness::new(
        10,
        vec![
            warm("held", 4, 1),
            warm("idle", 2, 1),
            warm("loading", 2, 1),
            warm("queued", 9, 1),
        ],
    );
    let (lease, _) = h.acquire(0);
    h.loaded(0);
    h.warm_up(1);
    let (loading, _) = h.acquire(2);
    let (queued, _) = h.acquire(3);
    let fx = h.step(Event::Shutdown);
    assert!(fx.contains(&Fx::Reject(loading)) && fx.contains(&Fx::Reject(queued)));
    assert!(fx.contains(&Fx::Abort(2)) && fx.contains(&Fx::Unload(1, UnloadReason::Shutdown)));
    assert!(matches!(h.errors[&queued], PoolError::ShuttingDown { .. }));
    assert_eq!(h.acquire(1).1.len(), 1, "new requests are refused");
    h.finish_load(2, LoadOutcome::Aborted);
    h.finish_unload(1);
    assert!(!h.shutdown_complete, "a lease is still held");
    assert_eq!(
        h.release(lease),
        vec![Fx::Unload(0, UnloadReason::Shutdown)]
    );
    assert_eq!(h.finish_unload(0), vec![Fx::ShutdownComplete]);
    assert_eq!(h.gov.total_reserved(), 0);
    assert_eq!(h.gov.live_reservations(), 0);
}

// ---------------------------------------------------------------- random sequences

#[derive(Debug, Clone)]
enum Op {
    Acquire(u32, u8),
    /// A request of its own size, in eighths of a GiB.
    AcquireSized(u32, u8),
    Release(usize),
    Cancel(usize),
    FinishLoad(usize, u8),
    FinishUnload(usize),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..6, any::<u8>()).prop_map(|(m, t)| Op::Acquire(m, t)),
        2 => (0u32..6, 0u8..96).prop_map(|(m, b)| Op::AcquireSized(m, b)),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, o)| Op::FinishLoad(i, o)),
        2 => any::<usize>().prop_map(Op::FinishUnload),
        1 => (0u16..5000).prop_map(Op::Advance),
    ]
}

fn pick<T: Copy + Ord>(items: impl Iterator<Item = T>, i: usize) -> Option<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_unstable();
    (!v.is_empty()).then(|| v[i % v.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_memory_within_budget_and_exactly_accounted(ops in prop::collection::vec(op(), 1..150)) {
        let specs = vec![
            warm("a", 3, 1).max_queue(3),
            warm("b", 5, 2).idle_ttl(Duration::ZERO),
            warm("c", 2, 1).pinned(),
            warm("d", 4, 1).priority(3).max_concurrency(2),
            warm("e", 7, 1).tier(Tier::Hot { pinned: false }),
            warm("never", 30, 1),
        ];
        let config = SchedulerConfig { max_queued_total: 8, ..SchedulerConfig::default() };
        let mut h = Harness::with_config(12, specs, config);
        for op in ops {
            match op {
                Op::Acquire(m, t) => {
                    let timeout = Some(Duration::from_millis(u64::from(t) * 20));
                    h.acquire_timeout(m, timeout);
                }
                Op::AcquireSized(m, b) => {
                    h.acquire_sized(m, u64::from(b) * GIB / 8);
                }
                Op::Release(i) => if let Some(r) = pick(h.leases.keys().copied(), i) { h.release(r); },
                Op::Cancel(i) => if let Some(r) = pick(h.m.waiters.keys().map(|r| r.0), i) { h.cancel(r); },
                Op::FinishLoad(i, o) => if let Some(m) = pick(h.loads.keys().copied(), i) {
                    let outcome = match o % 8 {
                        0 => LoadOutcome::Failed("x".into()),
                        1 => LoadOutcome::Panicked("p".into()),
                        2 => LoadOutcome::OutOfMemory("oom".into()),
                        3 => LoadOutcome::Aborted,
                        _ => LoadOutcome::Loaded { measured_bytes: None },
                    };
                    h.finish_load(m, outcome);
                },
                Op::FinishUnload(i) => if let Some(m) = pick(h.unloading.iter().copied(), i) { h.finish_unload(m); },
                Op::Advance(ms) => { h.advance(Duration::from_millis(u64::from(ms))); }
            }
        }
        // Wind down: shut down, release every lease, finish every task.
        h.step(Event::Shutdown);
        for r in h.leases.keys().copied().collect::<Vec<_>>() {
            h.release(r);
        }
        for _ in 0..10 {
            for m in h.loads.keys().copied().collect::<Vec<_>>() {
                h.finish_load(m, LoadOutcome::Aborted);
            }
            for m in h.unloading.iter().copied().collect::<Vec<_>>() {
                h.finish_unload(m);
            }
        }
        prop_assert!(h.shutdown_complete);
        prop_assert_eq!(h.gov.total_reserved(), 0);
        prop_assert_eq!(h.gov.live_reservations(), 0);
        prop_assert_eq!(h.m.queued(), 0);
    }
}
