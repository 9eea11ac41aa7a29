//! Random clients (get / put / compare-and-swap) against 3 members while members are killed,
//! restarted and partitioned; the recorded history is checked for linearizability per key
//! with a small Wing–Gong search (memoised, Porcupine-style).
//!
//! Seeds: `COORD_LIN_SEED=<n>[,<n>...]` replays the given seeds; otherwise a few fixed seeds run.
//! `COORD_LIN_MILLIS` sets the traffic duration per seed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_coord_client::{Client, ClientError, ClientOptions, GetRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::harness::Cluster;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Read,
    Write(String),
    Cas {
        expected: Option<String>,
        new: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Read(Option<String>),
    Written,
    CasOk,
    CasFailed,
    /// The outcome is unknown: the operation may have taken effect at any time after its call.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub call: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub ret: u64,
    pub input: Input,
    pub output: Output,
}

type State = Option<String>;

/// The register model: the next state if `op` can take effect in `state`.
fn step(state: &State, op: &Op) -> Option<State> {
    match (&op.input, &op.output) {
        (Input::Read, Output::Read(v)) => (v == state).then(|| state.clone()),
        (Input::Read, _) => None,
        (Input::Write(v), _) => Some(Some(v.clone())),
        (Input::Cas { expected, new }, Output::CasOk) => {
            (state == expected).then(|| Some(new.clone()))
        }
        (Input::Cas { expected, .. }, Output::CasFailed) => {
            (state != expected).then(|| state.clone())
        }
        (Input::Cas { expected, new }, _) => Some(if state == expected {
            Some(new.clone())
        } else {
            state.clone()
        }),
    }
}

/// True if some total order of the operations, consistent with real time, explains every
/// completed operation's output (operations of unknown outcome may be left out).
pub fn linearizable(ops: &[Op]) -> bool {
    let n = ops.len();
    let words = n.div_ceil(64);
    let required = ops.iter().filter(|o| o.ret != u64::MAX).count();
    let mut memo: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut done = vec![0u64; words];
    search(ops, &mut done, 0, required, &None, &mut memo)
}

fn search(
    ops: &[Op],
    done: &mut Vec<u64>,
    done_required: usize,
    required: usize,
    state: &State,
    memo: &mut HashSet<(Vec<u64>, State)>,
) -> bool {
    if done_required == required {
        return true;
    }
    let is_done = |done: &Vec<u64>, i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    let min_ret = (0..ops.len())
        .filter(|i| !is_done(done, *i))
        .map(|i| ops[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..ops.len() {
        if is_done(done, i) || ops[i].call > min_ret {
            continue;
        }
        let Some(next) = step(state, &ops[i]) else {
            continue;
        };
        done[i / 64] |= 1 << (i % 64);
        let key = (done.clone(), next.clone());
        let fresh = memo.insert(key);
        let req = done_required + usize::from(ops[i].ret != u64::MAX);
        if fresh && search(ops, done, req, required, &next, memo) {
            return true;
        }
        done[i / 64] &= !(1 << (i % 64));
    }
    false
}

fn op(call: u64, ret: u64, input: Input, output: Output) -> Op {
    Op {
        call,
        ret,
        input,
        output,
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn checker_accepts_linearizable_and_rejects_stale_histories() {
    // Sequential write then read.
    let good = vec![
        op(0, 10, Input::Write("a".into()), Output::Written),
        op(20, 30, Input::Read, Output::Read(s("a"))),
    ];
    assert!(linearizable(&good));
    // A read after a completed write returning the old value is not linearizable.
    let stale = vec![
        op(0, 10, Input::Write("a".into()), Output::Written),
        op(20, 30, Input::Read, Output::Read(None)),
    ];
    assert!(!linearizable(&stale));
    // Concurrent read may see either value.
    let concurrent = vec![
        op(0, 30, Input::Write("a".into()), Output::Written),
        op(10, 20, Input::Read, Output::Read(None)),
    ];
    assert!(linearizable(&concurrent));
    // An unknown write may apply later...
    let unknown = vec![
        op(0, u64::MAX, Input::Write("a".into()), Output::Unknown),
        op(20, 30, Input::Read, Output::Read(None)),
        op(40, 50, Input::Read, Output::Read(s("a"))),
    ];
    assert!(linearizable(&unknown));
    // ...but not before it was called.
    let early = vec![
        op(0, 10, Input::Read, Output::Read(s("a"))),
        op(20, u64::MAX, Input::Write("a".into()), Output::Unknown),
    ];
    assert!(!linearizable(&early));
    // Two CAS from the same state cannot both succeed.
    let double_cas = vec![
        op(
            0,
            10,
            Input::Cas {
                expected: None,
                new: "x".into(),
            },
            Output::CasOk,
        ),
        op(
            20,
            30,
            Input::Cas {
                expected: None,
                new: "y".into(),
            },
            Output::CasOk,
        ),
    ];
    assert!(!linearizable(&double_cas));
}

type History = Arc<Mutex<BTreeMap<String, Vec<Op>>>>;

fn now(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

async fn run_client(
    client: Client,
    id: usize,
    seed: u64,
    stop_at: Instant,
    base: Instant,
    history: History,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(id as u64));
    let keys = ["/lin/a", "/lin/b", "/lin/c"];
    let mut seq = 0;
    let mut ok_writes = 0;
    let record = |key: &str, o: Op| {
        history
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .push(o)
    };
    while Instant::now() < stop_at {
        let key = keys[rng.random_range(0..keys.len())];
        seq += 1;
        let value = format!("c{id}-{seq}");
        match rng.random_range(0..3) {
            0 => {
                let call = now(base);
                if let Ok(r) = client
                    .get_with(GetRequest {
                        key: key.into(),
                        serializable: false,
                    })
                    .await
                {
                    let v = r.kv.map(|kv| String::from_utf8(kv.value).unwrap());
                    record(key, op(call, now(base), Input::Read, Output::Read(v)));
                }
            }
            1 => {
                let call = now(base);
                match client.put(key, value.clone()).await {
                    Ok(_) => {
                        ok_writes += 1;
                        record(
                            key,
                            op(call, now(base), Input::Write(value), Output::Written),
                        );
                    }
                    Err(ClientError::Unavailable(_)) => {}
                    Err(_) => record(
                        key,
                        op(call, u64::MAX, Input::Write(value), Output::Unknown),
                    ),
                }
            }
            _ => {
                let call = now(base);
                let Ok(r) = client
                    .get_with(GetRequest {
                        key: key.into(),
                        serializable: false,
                    })
                    .await
                else {
                    continue;
                };
                let current =
                    r.kv.as_ref()
                        .map(|kv| String::from_utf8(kv.value.clone()).unwrap());
                record(
                    key,
                    op(call, now(base), Input::Read, Output::Read(current.clone())),
                );
                let version = r.kv.map_or(0, |kv| kv.version);
                let input = Input::Cas {
                    expected: current,
                    new: value.clone(),
                };
                let call = now(base);
                match client.compare_and_swap(key, version, value).await {
                    Ok(_) => {
                        ok_writes += 1;
                        record(key, op(call, now(base), input, Output::CasOk));
                    }
                    Err(ClientError::Conflict { .. }) => {
                        record(key, op(call, now(base), input, Output::CasFailed))
                    }
                    Err(ClientError::Unavailable(_)) => {}
                    Err(_) => record(key, op(call, u64::MAX, input, Output::Unknown)),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
    }
    ok_writes
}

async fn run_seed(seed: u64, millis: u64) {
    let mut c = Cluster::start_with_proxies(3).await;
    c.wait_leader().await;
    let mut rng = StdRng::seed_from_u64(seed);
    let base = Instant::now();
    let stop_at = Instant::now() + Duration::from_millis(millis);
    let history: History = Arc::default();
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(1500),
        retry_deadline: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let client = c.client_for(&[1, 2, 3], opts.clone());
            tokio::spawn(run_client(client, i, seed, stop_at, base, history.clone()))
        })
        .collect();

    let mut down: Option<u64> = None;
    let mut partitioned = false;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(rng.random_range(400..1200))).await;
        if let Some(id) = down.take() {
            c.restart(id).await;
        } else if partitioned {
            c.heal();
            partitioned = false;
        } else {
            let id = rng.random_range(1..=3);
            if rng.random_bool(0.5) {
                c.kill(id).await;
                down = Some(id);
            } else {
                c.partition(id);
                partitioned = true;
            }
        }
    }
    let mut ok_writes = 0;
    for h in clients {
        ok_writes += h.await.unwrap();
    }
    c.heal();
    if let Some(id) = down {
        c.restart(id).await;
    }
    c.stop().await;

    let history = history.lock().unwrap().clone();
    assert!(
        ok_writes >= 10,
        "seed {seed}: too few successful writes ({ok_writes}) to mean anything"
    );
    for (key, ops) in &history {
        assert!(
            linearizable(ops),
            "seed {seed}: history of {key} is not linearizable (replay with COORD_LIN_SEED={seed}):\n{ops:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_clients_under_kills_and_partitions_see_linearizable_history() {
    let seeds: Vec<u64> = match std::env::var("COORD_LIN_SEED") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("COORD_LIN_SEED is a list of numbers")
            })
            .collect(),
        Err(_) => vec![1, 2, 3],
    };
    let millis = std::env::var("COORD_LIN_MILLIS")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(5_000);
    for seed in seeds {
        run_seed(seed, millis).await;
    }
}
