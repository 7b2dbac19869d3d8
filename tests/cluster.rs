//! Cluster mode: several `reachd serve` processes on one PostgreSQL database. Each scenario
//! starts real nodes (each behind a TCP proxy of its own to PostgreSQL, see
//! `common/cluster.rs`) and checks the contract on values: event counts and causes per user,
//! session ids, feeds compared across nodes, and — for a node's death only — the bound on
//! offline detection (lease + offline grace + 1 s from the kill). Runs when
//! `REACHD_TEST_DATABASE` is a postgres:// URL; one scenario at a time.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::cluster::{
    Api, Cluster, Ev, Options, OwnPostgres, SlowReceiver, Ws, run, skip, tcp_ports_of, transitions,
    watch_offline, ws_close_code_within, ws_closed_within, ws_next, ws_send, ws_session,
};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The nodes' lease in every scenario but the PostgreSQL restart.
const LEASE_MS: u64 = 1_500;
/// The offline grace of the scenarios that kill, stop or cut a node.
const GRACE_MS: u64 = 500;

fn opened() -> (bool, String) {
    (true, "session_opened".into())
}

fn closed() -> (bool, String) {
    (false, "session_closed".into())
}

fn lost() -> (bool, String) {
    (false, "node_lost".into())
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Three nodes with the suite's lease and a service with reachability (pings every 10 s,
/// sessions that live 30 s, an offline grace of `grace_ms`): the cluster, its HTTP client, the
/// service's SID and the nodes' bases.
async fn three_nodes(grace_ms: u64) -> (Cluster, Api, String, Vec<String>) {
    let c = Cluster::start(Options::new(3, LEASE_MS));
    let api = c.api.clone();
    let svc = c.service(10_000, 30_000, grace_ms).await;
    let b = (0..3).map(|i| c.base(i).to_string()).collect();
    (c, api, svc, b)
}

// ------------------------------------------------------------------- losing node 2 (2 to 4)

/// The node that scenarios 2 to 4 kill, stop or cut from the database.
const VICTIM: usize = 2;
/// The node that holds the second session of a user shared with the victim.
const PARTNER: usize = 0;
/// The node that holds the sessions of the users the victim never served.
const FAR: usize = 1;

/// Who opens sessions where before the victim goes.
struct Lineup<'a> {
    /// Users with one HTTP session, on the victim.
    only: &'a [String],
    /// Whether each of `only` pings its session on the victim once after opening it (a ping
    /// the node holds in memory and would flush later).
    ping: bool,
    /// A user with one WebSocket session, on the victim.
    socket: &'a str,
    /// Users with a session on the victim and one on the partner node.
    shared: &'a [String],
    /// Users with one session, on the far node.
    far: &'a [String],
}

/// The sessions of a [`Lineup`], all online as seen from node 0.
struct Held {
    /// The WebSocket of `Lineup::socket`.
    ws: Ws,
    /// `Lineup::only`.
    only: Vec<String>,
    /// The users whose every session is on the victim: `only`, then the socket's user.
    lost: Vec<String>,
    /// The users with a session on a live node: `shared`, then `far`.
    kept: Vec<String>,
    /// Each HTTP user's token and sessions `(id, node)`, in opening order.
    sessions: HashMap<String, (String, Vec<(String, usize)>)>,
    /// Node 0's newest event once everyone was online.
    cursor: i64,
}

impl Held {
    /// `who`'s token and the id of its session on `node`.
    fn on(&self, who: &str, node: usize) -> (String, String) {
        let (token, sessions) = &self.sessions[who];
        let (id, _) = sessions
            .iter()
            .find(|(_, n)| *n == node)
            .unwrap_or_else(|| panic!("{who} has no session on node{node}"));
        (token.clone(), id.clone())
    }
}

impl Lineup<'_> {
    /// Opens these sessions (in this order) and waits until node 0 shows everyone online.
    async fn hold(self, c: &Cluster, svc: &str) -> Held {
        let api = &c.api;
        let mut sessions: HashMap<String, (String, Vec<(String, usize)>)> = HashMap::new();
        // Opens a session for `who` on each of `nodes`, pinging it once there when `ping`.
        let mut open = async |who: &String, nodes: &[usize], ping: bool| {
            let t = c.token(svc, who);
            for &node in nodes {
                let id = api.open_ok(c.base(node), &t).await;
                if ping {
                    assert_eq!(api.ping(c.base(node), &t, &id).await, 204);
                }
                let entry = sessions
                    .entry(who.clone())
                    .or_insert_with(|| (t.clone(), Vec::new()));
                entry.1.push((id, node));
            }
        };
        for who in self.only {
            open(who, &[VICTIM], self.ping).await;
        }
        let (ws, _, _) = ws_session(c.base(VICTIM), &c.token(svc, self.socket), None)
            .await
            .expect("socket on the victim");
        for who in self.shared {
            open(who, &[VICTIM, PARTNER], false).await;
        }
        for who in self.far {
            open(who, &[FAR], false).await;
        }
        let mut lost = self.only.to_vec();
        lost.push(self.socket.to_string());
        let mut kept = self.shared.to_vec();
        kept.extend(self.far.iter().cloned());
        for who in lost.iter().chain(&kept) {
            api.until_online(c.base(0), svc, who, true).await;
        }
        Held {
            ws,
            only: self.only.to_vec(),
            lost,
            kept,
            sessions,
            cursor: api.cursor(c.base(0), svc).await,
        }
    }
}

/// Waits until node 0's feed shows an offline event for each of `held.lost`, and asserts the
/// offline bound: each event was committed after the start of the last poll that did not show
/// it, so that start must not be past `lease + grace + 1 s` from `gone` (the victim's death).
async fn assert_lost_within_the_bound(c: &Cluster, svc: &str, held: &Held, gone: Instant) {
    let seen = watch_offline(
        &c.api,
        c.base(0),
        svc,
        held.cursor,
        &held.lost,
        gone,
        Duration::from_secs(20),
    )
    .await;
    let logs = c.logs();
    let bound = Duration::from_millis(LEASE_MS + GRACE_MS + 1_000);
    for (who, (seen_at, last_miss)) in &seen {
        eprintln!(
            "{who}: offline event seen {seen_at:?} after the death (absent at {last_miss:?}); bound {bound:?}"
        );
        assert!(
            *last_miss <= bound,
            "{who}'s offline event was still absent {last_miss:?} after the death: the bound is \
             lease + grace + 1 s = {bound:?}\n{logs}"
        );
    }
}

/// Asserts the reachability events of `events` (after `held.cursor`): one offline, caused by
/// node_lost, for each of `held.lost`; none for `held.kept`.
fn assert_lost_once(events: &[Ev], held: &Held) {
    for who in &held.lost {
        assert_eq!(
            transitions(events, who),
            vec![lost()],
            "{who}: one offline, caused by node_lost, never online again\n{events:#?}"
        );
    }
    for who in &held.kept {
        assert_eq!(
            transitions(events, who),
            vec![],
            "{who} has a session on a live node: no event\n{events:#?}"
        );
    }
}

/// Asserts, on each of `bases`, that the sessions of `held.only` are gone (a ping answers 404)
/// and their users offline.
async fn assert_old_sessions_gone(api: &Api, svc: &str, bases: &[String], held: &Held) {
    for base in bases {
        for who in &held.only {
            let (t, id) = held.on(who, VICTIM);
            assert_eq!(
                api.ping(base, &t, &id).await,
                404,
                "{who}'s session on the lost node, pinged on {base}"
            );
            assert_eq!(api.is_online(base, svc, who).await, json!(false), "{who}");
        }
    }
}

/// Asserts, on each of `bases` (node 0 first), that the socket's user is offline and
/// `held.kept` online, and that the kept users' sessions off the victim answer their pings.
async fn assert_kept_online(api: &Api, svc: &str, bases: &[String], held: &Held) {
    let socket = held.lost.last().expect("the socket's user");
    for base in bases {
        assert_eq!(
            api.is_online(base, svc, socket).await,
            json!(false),
            "{socket}"
        );
        for who in &held.kept {
            assert_eq!(api.is_online(base, svc, who).await, json!(true), "{who}");
        }
    }
    for who in &held.kept {
        let (t, sessions) = &held.sessions[who];
        for (id, node) in sessions.iter().filter(|(_, n)| *n != VICTIM) {
            assert_eq!(
                api.ping(&bases[*node], t, id).await,
                204,
                "{who}'s session on node{node} lives"
            );
        }
    }
}

/// Opens a session for `token` on the victim every 100 ms until it answers 201 (the victim
/// rejoined after `what`), and returns its id; panics when that takes past `within` of
/// `since`.
async fn open_once_served(
    c: &Cluster,
    token: &str,
    since: Instant,
    within: Duration,
    what: &str,
) -> String {
    let mut statuses = Vec::new();
    let id = loop {
        let r = c.api.open(c.base(VICTIM), token, None).await;
        if r.status == 201 {
            break r.str("session_id");
        }
        statuses.push(r.status);
        assert!(
            since.elapsed() < within,
            "node{VICTIM} serves no new session after {what}: {statuses:?}\n{}",
            c.logs()
        );
        sleep_ms(100).await;
    };
    eprintln!("answers to opens on node{VICTIM} before it rejoined after {what}: {statuses:?}");
    id
}

// ------------------------------------------------------------------------------ scenario 1

#[test]
fn sessions_on_several_nodes_make_one_online_and_one_offline_event() {
    if skip() {
        return;
    }
    run(async {
        let (c, api, svc, b) = three_nodes(0).await;

        // Two devices on two nodes, closed in opening order.
        let t = c.token(&svc, "in_order");
        let s0 = api.open_ok(&b[0], &t).await;
        let s1 = api.open_ok(&b[1], &t).await;
        assert_eq!(api.close(&b[0], &t, &s0).await, 204);
        sleep_ms(300).await;
        for base in &b {
            assert_eq!(
                api.is_online(base, &svc, "in_order").await,
                json!(true),
                "a session on node1 still lives, seen from {base}"
            );
        }
        assert_eq!(api.close(&b[1], &t, &s1).await, 204);

        // Closed in reverse order.
        let t = c.token(&svc, "reversed");
        let s0 = api.open_ok(&b[0], &t).await;
        let s1 = api.open_ok(&b[1], &t).await;
        assert_eq!(api.close(&b[1], &t, &s1).await, 204);
        assert_eq!(api.close(&b[0], &t, &s0).await, 204);

        // Opened and closed at the same time on three nodes, several times over.
        let together = names("together", 6);
        for who in &together {
            let t = c.token(&svc, who);
            let (r0, r1, r2) = tokio::join!(
                api.open(&b[0], &t, None),
                api.open(&b[1], &t, None),
                api.open(&b[2], &t, None)
            );
            for r in [&r0, &r1, &r2] {
                assert_eq!(r.status, 201, "{who}: {:?}", r.body);
            }
            let ids = [
                r0.str("session_id"),
                r1.str("session_id"),
                r2.str("session_id"),
            ];
            let (c0, c1, c2) = tokio::join!(
                api.close(&b[0], &t, &ids[0]),
                api.close(&b[1], &t, &ids[1]),
                api.close(&b[2], &t, &ids[2])
            );
            assert_eq!((c0, c1, c2), (204, 204, 204), "{who}");
        }

        // A ping on a third node moves a session there; both closed at once.
        let t = c.token(&svc, "mover");
        let s0 = api.open_ok(&b[0], &t).await;
        let s1 = api.open_ok(&b[1], &t).await;
        assert_eq!(api.ping(&b[2], &t, &s0).await, 204, "ping on another node");
        let (c0, c1) = tokio::join!(api.close(&b[2], &t, &s0), api.close(&b[1], &t, &s1));
        assert_eq!((c0, c1), (204, 204));

        let mut fixed = vec!["in_order".to_string(), "reversed".into(), "mover".into()];
        fixed.extend(together);
        for who in &fixed {
            for base in &b {
                api.until_online(base, &svc, who, false).await;
            }
        }
        sleep_ms(500).await;
        let events = api.feed(&b[2], &svc, 0).await;
        for who in &fixed {
            assert_eq!(
                transitions(&events, who),
                vec![opened(), closed()],
                "{who}: exactly one online and one offline event\n{events:#?}"
            );
        }

        // 1,000 random opens, closes and pings over three nodes for four users. The expected
        // events follow the global live-session count: one per 0 <-> 1 change.
        let seed: u64 = std::env::var("REACHD_CLUSTER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("random operations: REACHD_CLUSTER_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let users = names("random", 4);
        let tokens: Vec<String> = users.iter().map(|u| c.token(&svc, u)).collect();
        let mut live: Vec<Vec<(String, usize)>> = vec![Vec::new(); users.len()];
        let mut expected: Vec<Vec<(bool, String)>> = vec![Vec::new(); users.len()];
        let (mut opens, mut closes, mut pings) = (0, 0, 0);
        for op in 0..1_000 {
            let u = rng.random_range(0..users.len());
            let node = rng.random_range(0..3);
            let roll: f64 = rng.random();
            if live[u].is_empty() || (roll < 0.45 && live[u].len() < 4) {
                let r = api.open(&b[node], &tokens[u], None).await;
                assert_eq!(
                    r.status, 201,
                    "op {op} (seed {seed}): open for {} on node{node}: {:?}",
                    users[u], r.body
                );
                if live[u].is_empty() {
                    expected[u].push(opened());
                }
                live[u].push((r.str("session_id"), node));
                opens += 1;
            } else if roll < 0.8 {
                let k = rng.random_range(0..live[u].len());
                let (id, holder) = live[u].remove(k);
                let status = api.close(&b[holder], &tokens[u], &id).await;
                assert_eq!(
                    status, 204,
                    "op {op} (seed {seed}): close of {id} on node{holder}"
                );
                if live[u].is_empty() {
                    expected[u].push(closed());
                    // The offline transition commits after the close's answer: wait for it,
                    // so that the next open is a real 0 -> 1 change.
                    let probe = rng.random_range(0..3);
                    api.until_online(&b[probe], &svc, &users[u], false).await;
                }
                closes += 1;
            } else {
                let k = rng.random_range(0..live[u].len());
                let (id, holder) = live[u][k].clone();
                let status = api.ping(&b[node], &tokens[u], &id).await;
                assert_eq!(
                    status, 204,
                    "op {op} (seed {seed}): ping of {id} (held by node{holder}) on node{node}"
                );
                live[u][k].1 = node;
                pings += 1;
            }
        }
        for u in 0..users.len() {
            let all: Vec<_> = live[u].drain(..).collect();
            let n = all.len();
            for (i, (id, holder)) in all.into_iter().enumerate() {
                assert_eq!(api.close(&b[holder], &tokens[u], &id).await, 204);
                if i + 1 == n {
                    expected[u].push(closed());
                }
            }
            for base in &b {
                api.until_online(base, &svc, &users[u], false).await;
            }
        }
        eprintln!("random operations: {opens} opens, {closes} closes, {pings} pings");
        sleep_ms(500).await;

        let feeds = [
            api.feed(&b[0], &svc, 0).await,
            api.feed(&b[1], &svc, 0).await,
            api.feed(&b[2], &svc, 0).await,
        ];
        assert_eq!(feeds[0], feeds[1], "node0 and node1 show one feed");
        assert_eq!(feeds[0], feeds[2], "node0 and node2 show one feed");
        let feed = &feeds[0];
        assert!(feed.windows(2).all(|w| w[0].id < w[1].id), "feed ids grow");
        for (u, who) in users.iter().enumerate() {
            let got = transitions(feed, who);
            assert_eq!(
                got.len(),
                expected[u].len(),
                "{who} (seed {seed}): {} events for {} real 0<->1 changes",
                got.len(),
                expected[u].len()
            );
            assert_eq!(got, expected[u], "{who} (seed {seed})");
            let sequences: Vec<i64> = feed
                .iter()
                .filter(|e| e.is_reachability() && &e.identity == who)
                .map(|e| e.sequence)
                .collect();
            assert!(
                sequences.windows(2).all(|w| w[0] < w[1]),
                "{who}'s sequence grows: {sequences:?}"
            );
        }
    });
}

// ------------------------------------------------------------------------------ scenario 2

#[test]
fn a_killed_node_s_users_go_offline_once_with_node_lost_within_the_bound() {
    if skip() {
        return;
    }
    run(async {
        let (mut c, api, svc, b) = three_nodes(GRACE_MS).await;

        // Users only on node2 (the victim), one of them over a WebSocket; users on node2 and
        // node0; users on node1 only.
        let held = Lineup {
            only: &names("only", 4),
            ping: false,
            socket: "only_ws",
            shared: &names("both", 3),
            far: &names("elsewhere", 3),
        }
        .hold(&c, &svc)
        .await;

        let killed = Instant::now();
        c.kill(VICTIM);
        assert_lost_within_the_bound(&c, &svc, &held, killed).await;

        // A wrong event (a second offline, one for a user with another session) would show
        // within another grace and second.
        sleep_ms(GRACE_MS + 1_500).await;
        let events = api.feed(&b[1], &svc, held.cursor).await;
        assert_lost_once(&events, &held);
        assert_old_sessions_gone(&api, &svc, &b[..2], &held).await;
        assert_kept_online(&api, &svc, &b[..2], &held).await;
    });
}

// ------------------------------------------------------------------------------ scenario 3

#[test]
fn a_node_resumed_after_sigstop_past_its_lease_resurrects_nothing() {
    if skip() {
        return;
    }
    run(async {
        let (c, api, svc, b) = three_nodes(GRACE_MS).await;

        let mut held = Lineup {
            only: &names("stopped", 2),
            ping: true,
            socket: "stopped_ws",
            shared: &["shared".to_string()],
            far: &[],
        }
        .hold(&c, &svc)
        .await;

        let frozen = Instant::now();
        c.signal(VICTIM, "STOP");
        // A ping that waits in the frozen node's backlog, served when it resumes.
        let queued = {
            let (api, base) = (api.clone(), b[VICTIM].clone());
            let (t, id) = held.on("stopped0", VICTIM);
            tokio::spawn(async move { api.ping(&base, &t, &id).await })
        };
        assert_lost_within_the_bound(&c, &svc, &held, frozen).await;
        let past = Duration::from_millis(LEASE_MS + GRACE_MS + 1_500);
        tokio::time::sleep(past.saturating_sub(frozen.elapsed())).await;

        c.signal(VICTIM, "CONT");
        let (t1, id1) = held.on("stopped1", VICTIM);
        let right_after = api.ping(&b[VICTIM], &t1, &id1).await;
        assert_ne!(
            right_after, 204,
            "the resumed node served a ping of a session it lost with its lease"
        );
        let queued = queued.await.expect("queued ping");
        assert_ne!(
            queued, 204,
            "a ping sent while the node was stopped was served as live"
        );
        assert!(
            ws_closed_within(&mut held.ws, Duration::from_secs(10)).await,
            "the resumed node's WebSocket client was not disconnected"
        );

        // It rejoins and serves new sessions.
        let fresh = c.token(&svc, "fresh");
        let fresh_id =
            open_once_served(&c, &fresh, frozen, Duration::from_secs(30), "SIGCONT").await;
        assert_eq!(api.close(&b[VICTIM], &fresh, &fresh_id).await, 204);
        api.until_online(&b[0], &svc, "fresh", false).await;
        // Past a flush interval (2 s): stale writes of the resumed node would show now.
        sleep_ms(2_500).await;

        let events = api.feed(&b[0], &svc, held.cursor).await;
        assert_lost_once(&events, &held);
        assert_eq!(transitions(&events, "fresh"), vec![opened(), closed()]);
        assert_old_sessions_gone(&api, &svc, &b, &held).await;
        for base in &b {
            for who in &held.only {
                let sessions = api
                    .get(
                        base,
                        &format!("/api/v1/services/{svc}/users/{who}/sessions"),
                    )
                    .await;
                assert_eq!(sessions.status, 200, "{:?}", sessions.body);
                assert_eq!(
                    sessions.body["sessions"].as_array().map(Vec::len),
                    Some(0),
                    "{who} has no stored session on {base}: {}",
                    sessions.body
                );
            }
        }
        assert_kept_online(&api, &svc, &b, &held).await;
    });
}

// ------------------------------------------------------------------------------ scenario 4

#[test]
fn a_node_cut_from_postgres_is_lost_like_a_killed_one_and_answers_503_meanwhile() {
    if skip() {
        return;
    }
    run(async {
        let (c, api, svc, b) = three_nodes(GRACE_MS).await;

        let mut held = Lineup {
            only: &names("cut", 2),
            ping: false,
            socket: "cut_ws",
            shared: &["shared".to_string()],
            far: &["far".to_string()],
        }
        .hold(&c, &svc)
        .await;

        let severed = Instant::now();
        c.nodes[VICTIM].proxy.cut();
        assert_lost_within_the_bound(&c, &svc, &held, severed).await;

        // Its lease has lapsed: presence answers 503, its sockets are closed (checked at the
        // end, so that one run shows every other part too).
        let (t0, id0) = held.on("cut0", VICTIM);
        let ping_while_cut = api
            .client(
                &b[VICTIM],
                reqwest::Method::POST,
                &format!("/client/v1/sessions/{id0}/ping"),
                &t0,
                Some(json!({})),
            )
            .await;
        let probe = c.token(&svc, "probe");
        let open_while_cut = api.open(&b[VICTIM], &probe, None).await;
        // Closed by the lapse itself (1013, "try again later": reconnect elsewhere), not by
        // the keepalive check that would find the session gone within a ping interval.
        let socket_closed = ws_close_code_within(&mut held.ws, Duration::from_secs(5)).await;

        sleep_ms(GRACE_MS + 1_000).await;
        let events = api.feed(&b[0], &svc, held.cursor).await;
        assert_lost_once(&events, &held);

        // Back on the database: a fresh member that serves new sessions, none of the old.
        c.nodes[VICTIM].proxy.restore();
        let probe_id = open_once_served(
            &c,
            &probe,
            Instant::now(),
            Duration::from_secs(20),
            "it got the database back",
        )
        .await;
        assert_eq!(api.ping(&b[0], &probe, &probe_id).await, 204);
        assert_old_sessions_gone(&api, &svc, &b, &held).await;
        assert_eq!(api.close(&b[0], &probe, &probe_id).await, 204);
        api.until_online(&b[1], &svc, "probe", false).await;
        let events = api.feed(&b[1], &svc, held.cursor).await;
        assert_eq!(transitions(&events, "probe"), vec![opened(), closed()]);

        assert_eq!(
            socket_closed,
            Some(1013),
            "the cut node's WebSocket client: closed with 1013 at the lapse (None: kept open)"
        );
        assert_eq!(
            (open_while_cut.status, ping_while_cut.status),
            (503, 503),
            "presence on the cut node after its lease lapsed: open {:?}, ping {:?}",
            open_while_cut.body,
            ping_while_cut.body
        );
    });
}

// ------------------------------------------------------------------------------ scenario 5

/// Follows the SSE feed of `base`, reconnecting with `Last-Event-ID` whenever the stream ends;
/// every event received, and how many times it connected.
async fn follow_sse(
    base: String,
    svc: String,
    out: Arc<Mutex<Vec<Ev>>>,
    stop: CancellationToken,
) -> usize {
    use futures_util::StreamExt;
    let http = reqwest::Client::new();
    let mut last: Option<i64> = None;
    let mut connections = 0;
    while !stop.is_cancelled() {
        let mut req = http
            .get(format!("{base}/api/v1/services/{svc}/events"))
            .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
            .header("accept", "text/event-stream");
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = tokio::select! {
            _ = stop.cancelled() => break,
            res = req.send() => res,
        };
        if let Ok(res) = res.and_then(|r| r.error_for_status()) {
            connections += 1;
            let mut body = res.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let chunk = tokio::select! {
                    _ = stop.cancelled() => return connections,
                    chunk = body.next() => chunk,
                };
                let Some(Ok(bytes)) = chunk else { break };
                buf.extend_from_slice(&bytes);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let frame = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 2);
                    let mut id = None;
                    let mut data = None;
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = v.trim().parse::<i64>().ok();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = serde_json::from_str::<Value>(v).ok();
                        }
                    }
                    if let (Some(id), Some(data)) = (id, data) {
                        let mut ev = Ev::from_json(&data);
                        ev.id = id;
                        out.lock().unwrap_or_else(|e| e.into_inner()).push(ev);
                        last = Some(id);
                    }
                }
            }
        }
        sleep_ms(100).await;
    }
    connections
}

#[test]
fn a_postgres_restart_under_load_loses_no_event_and_leaves_no_gap_for_subscribers() {
    if skip() {
        return;
    }
    run(async {
        // A PostgreSQL server of its own: the shared one stays up for the other scenarios.
        let pg = OwnPostgres::start();
        // A lease that outlasts the restart: the nodes keep their members and sockets.
        let c = Cluster::start_on(&pg.url, Options::new(2, 8_000));
        let api = c.api.clone();
        let svc = c.service(10_000, 30_000, 0).await;
        let b: Vec<String> = (0..2).map(|i| c.base(i).to_string()).collect();
        const WRITERS: usize = 4;
        const PER_WRITER: usize = 10;
        let users = names("w", WRITERS * PER_WRITER);
        for who in &users {
            let r = api
                .admin_form(
                    &b[0],
                    &format!("/chat/v2/Services/{svc}/Users"),
                    &[("Identity", who)],
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }

        // Subscribers on node1: a WebSocket and the SSE feed.
        let (mut ws, _, _) = ws_session(&b[1], &c.token(&svc, "watcher"), None)
            .await
            .expect("socket on node1");
        assert!(ws_send(&mut ws, json!({"type": "subscribe", "identities": users})).await);
        for _ in 0..users.len() {
            let m = ws_next(&mut ws, Duration::from_secs(5))
                .await
                .expect("snapshot");
            assert_eq!(m["type"], "user", "{m}");
        }
        let stop = CancellationToken::new();
        let updates: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let ws_closed = Arc::new(AtomicBool::new(false));
        let ws_task = {
            let (updates, closed, stop) = (updates.clone(), ws_closed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut last_ping = Instant::now();
                loop {
                    match ws_next(&mut ws, Duration::from_millis(500)).await {
                        Ok(m) if m["type"] == "userUpdated" => {
                            updates.lock().unwrap_or_else(|e| e.into_inner()).push((
                                m["user"]["identity"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                                m["user"]["is_online"].as_bool().unwrap_or(false),
                            ));
                        }
                        Ok(_) => {}
                        Err(true) => {
                            closed.store(true, Ordering::SeqCst);
                            return ws;
                        }
                        Err(false) => {}
                    }
                    if stop.is_cancelled() {
                        return ws;
                    }
                    if last_ping.elapsed() > Duration::from_secs(2) {
                        last_ping = Instant::now();
                        ws_send(&mut ws, json!({"type": "ping"})).await;
                    }
                }
            })
        };
        let sse: Arc<Mutex<Vec<Ev>>> = Arc::default();
        let sse_stop = CancellationToken::new();
        let sse_task = tokio::spawn(follow_sse(
            b[1].clone(),
            svc.clone(),
            sse.clone(),
            sse_stop.clone(),
        ));

        // Writers on node0: open and close, one user at a time; an answer other than 201/204
        // leaves the user's state unknown, and the writer goes on with its next user.
        let writers_stop = CancellationToken::new();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let pool: Vec<(String, String)> = users[w * PER_WRITER..(w + 1) * PER_WRITER]
                .iter()
                .map(|u| (u.clone(), c.token(&svc, u)))
                .collect();
            let (api, base, stop) = (api.clone(), b[0].clone(), writers_stop.clone());
            let svc = svc.clone();
            writers.push(tokio::spawn(async move {
                // identity -> (completed cycles, tainted, completion times)
                let mut report: HashMap<String, (usize, bool, Vec<Instant>)> = HashMap::new();
                let mut failures = 0;
                let mut cur = 0;
                while !stop.is_cancelled() && cur < pool.len() {
                    let (who, token) = &pool[cur];
                    let entry = report.entry(who.clone()).or_insert((0, false, Vec::new()));
                    let r = api.open(&base, token, None).await;
                    let ok = r.status == 201
                        && api.close(&base, token, &r.str("session_id")).await == 204;
                    if ok {
                        entry.0 += 1;
                        entry.2.push(Instant::now());
                        // grace 0: the offline commits after the close; the next open must be
                        // a real change.
                        let until = Instant::now() + Duration::from_secs(15);
                        while api.is_online(&base, &svc, who).await != json!(false)
                            && Instant::now() < until
                        {
                            sleep_ms(20).await;
                        }
                    } else {
                        entry.1 = true;
                        failures += 1;
                        cur += 1;
                        sleep_ms(200).await;
                    }
                }
                (report, failures)
            }));
        }

        sleep_ms(1_500).await;
        let restarting = Instant::now();
        pg.restart(Duration::from_millis(1_500));
        let restarted = Instant::now();
        eprintln!(
            "PostgreSQL down and up again in {:?}",
            restarted - restarting
        );
        sleep_ms(3_000).await;
        writers_stop.cancel();
        let mut reports: HashMap<String, (usize, bool, Vec<Instant>)> = HashMap::new();
        let mut failures = 0;
        for w in writers {
            let (report, f) = w.await.expect("writer");
            reports.extend(report);
            failures += f;
        }
        let after_restart: usize = reports
            .values()
            .map(|(_, _, at)| at.iter().filter(|t| **t > restarted).count())
            .sum();
        let cycles: usize = reports.values().map(|(n, _, _)| n).sum();
        eprintln!(
            "{cycles} open/close cycles ({after_restart} after the restart), {failures} failed operations"
        );
        assert!(
            after_restart > 0,
            "no write succeeded after the restart\n{}",
            c.logs()
        );

        for (who, (_, tainted, _)) in &reports {
            if !tainted {
                api.until_online(&b[0], &svc, who, false).await;
            }
        }
        sleep_ms(500).await;
        let feed = api.feed(&b[0], &svc, 0).await;
        let last = feed.last().map_or(0, |e| e.id);
        common::eventually_within(
            "the SSE subscriber caught up",
            Duration::from_secs(20),
            || {
                let sse = sse.clone();
                async move {
                    sse.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .last()
                        .is_some_and(|e| e.id >= last)
                }
            },
        )
        .await;
        sleep_ms(500).await;
        stop.cancel();
        sse_stop.cancel();
        let connections = sse_task.await.expect("sse");
        let ws = ws_task.await.expect("ws");
        eprintln!("the SSE subscriber connected {connections} times");

        assert!(feed.windows(2).all(|w| w[0].id < w[1].id), "feed ids grow");
        let sse_events = sse.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sse_ids: Vec<i64> = sse_events.iter().map(|e| e.id).collect();
        let feed_ids: Vec<i64> = feed.iter().map(|e| e.id).collect();
        assert_eq!(
            sse_ids, feed_ids,
            "the SSE subscriber saw exactly the feed, in order"
        );
        assert_eq!(sse_events, feed, "same events over SSE");
        for (who, (n, tainted, _)) in &reports {
            let got = transitions(&feed, who);
            if !tainted {
                let want: Vec<_> = (0..*n).flat_map(|_| [opened(), closed()]).collect();
                assert_eq!(got, want, "{who}: every acknowledged cycle is in the feed");
            }
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(i, (online, _))| *online == (i % 2 == 0)),
                "{who} alternates online/offline: {got:?}"
            );
        }
        assert!(
            !ws_closed.load(Ordering::SeqCst),
            "the WebSocket subscriber was disconnected by the restart"
        );
        let updates = updates.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for who in &users {
            let from_ws: Vec<bool> = updates
                .iter()
                .filter(|(i, _)| i == who)
                .map(|(_, o)| *o)
                .collect();
            let from_feed: Vec<bool> = transitions(&feed, who).iter().map(|(o, _)| *o).collect();
            assert_eq!(
                from_ws, from_feed,
                "{who}: the WebSocket subscriber got every update, in order"
            );
        }
        drop(ws);
        drop(c);
    });
}

// ------------------------------------------------------------------------------ scenario 6

#[test]
fn webhooks_from_three_nodes_survive_a_node_killed_mid_request() {
    if skip() {
        return;
    }
    run(async {
        let (mut c, api, svc, b) = three_nodes(0).await;
        let hooks = SlowReceiver::start(Duration::from_millis(500)).await;
        let r = api
            .admin_form(
                &b[0],
                &format!("/chat/v2/Services/{svc}"),
                &[
                    ("PostWebhookUrl", hooks.url("/chat").as_str()),
                    ("PostWebhookRetryCount", "2"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);

        // Events through node0 and node1 (node2, the victim, only dispatches): rounds of one
        // open and close per user.
        let users = names("hook", 12);
        let producer = {
            let (api, b, svc) = (api.clone(), b.clone(), svc.clone());
            let tokens: Vec<String> = users.iter().map(|u| c.token(&svc, u)).collect();
            let users = users.clone();
            tokio::spawn(async move {
                for round in 0..5 {
                    let mut open = Vec::new();
                    for (k, t) in tokens.iter().enumerate() {
                        let node = (k + round) % 2;
                        open.push((node, api.open_ok(&b[node], t).await));
                    }
                    for (k, (node, id)) in open.iter().enumerate() {
                        assert_eq!(api.close(&b[*node], &tokens[k], id).await, 204);
                    }
                    for who in &users {
                        api.until_online(&b[round % 2], &svc, who, false).await;
                    }
                }
            })
        };

        // Kill node2 while one of its requests is in flight at the receiver.
        let victim = c.nodes[2].pid();
        let start = Instant::now();
        let (killed_at, in_flight) = loop {
            let ports = tcp_ports_of(victim);
            let hits = hooks.hits();
            let mine: Vec<usize> = hits
                .iter()
                .enumerate()
                .filter(|(_, h)| h.finished.is_none() && ports.contains(&h.peer_port))
                .map(|(i, _)| i)
                .collect();
            if !mine.is_empty() {
                c.kill(2);
                break (Instant::now(), mine);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node2 never had a request in flight ({} requests so far)\n{}",
                hits.len(),
                c.logs()
            );
            sleep_ms(10).await;
        };
        producer.await.expect("producer");
        let hits_at_kill = hooks.hits();
        let killed_tokens: Vec<String> = in_flight
            .iter()
            .map(|i| hits_at_kill[*i].token.clone())
            .collect();
        eprintln!("node2 killed with {} request(s) in flight", in_flight.len());

        // Every event of the feed is delivered.
        let feed = api.feed(&b[0], &svc, 0).await;
        let want: HashSet<(String, String, i64)> = feed
            .iter()
            .filter(|e| users.contains(&e.identity))
            .map(|e| {
                let kind = match e.kind.as_str() {
                    "user.added" => "onUserAdded",
                    _ => "onUserUpdated",
                };
                (e.identity.clone(), kind.to_string(), e.sequence)
            })
            .collect();
        let delivered = |hits: &[common::cluster::Hit]| -> HashSet<(String, String, i64)> {
            hits.iter()
                .filter(|h| h.finished.is_some())
                .map(|h| h.key())
                .collect()
        };
        common::eventually_within("every event delivered", Duration::from_secs(90), || {
            let hooks = hooks.clone();
            let want = want.clone();
            async move { want.is_subset(&delivered(&hooks.hits())) }
        })
        .await;
        sleep_ms(1_000).await;
        let hits = hooks.hits();
        let got = delivered(&hits);
        assert_eq!(got, want, "exactly the feed's events were delivered");

        // The requests node2 had in flight were made again, by another node, with the token.
        for (i, token) in in_flight.iter().zip(&killed_tokens) {
            assert!(
                hits.iter()
                    .skip(*i + 1)
                    .any(|h| &h.token == token && h.started > killed_at),
                "the delivery {token} in flight on the killed node was never attempted again"
            );
        }
        // One token per event; never two attempts of one delivery at once.
        let mut tokens_of: HashMap<(String, String, i64), HashSet<String>> = HashMap::new();
        let mut attempts: HashMap<String, Vec<(Instant, Instant)>> = HashMap::new();
        for (i, h) in hits.iter().enumerate() {
            tokens_of
                .entry(h.key())
                .or_default()
                .insert(h.token.clone());
            let end = match h.finished {
                Some(at) => at,
                None if in_flight.contains(&i) => killed_at,
                None => Instant::now(),
            };
            attempts
                .entry(h.token.clone())
                .or_default()
                .push((h.started, end));
        }
        for (key, tokens) in &tokens_of {
            assert_eq!(
                tokens.len(),
                1,
                "{key:?} arrived with several tokens: {tokens:?}"
            );
        }
        let duplicates = attempts.values().filter(|a| a.len() > 1).count();
        eprintln!(
            "{} requests, {duplicates} deliveries attempted more than once",
            hits.len()
        );
        for (token, list) in &attempts {
            let mut list = list.clone();
            list.sort();
            assert!(
                list.windows(2).all(|w| w[1].0 >= w[0].1),
                "{token} was attempted twice at once: {list:?}"
            );
        }
        // Per user, a delivery starts only after the previous one was answered to a live node.
        for who in &users {
            let mut order: Vec<(i64, String)> = Vec::new();
            for h in hits.iter().filter(|h| &h.identity() == who) {
                if !order.iter().any(|(_, t)| t == &h.token) {
                    order.push((h.sequence(), h.token.clone()));
                }
            }
            let sequences: Vec<i64> = order.iter().map(|(s, _)| *s).collect();
            let mut sorted = sequences.clone();
            sorted.sort();
            assert_eq!(sequences, sorted, "{who}'s deliveries in sequence order");
            for pair in order.windows(2) {
                let next_start = hits
                    .iter()
                    .filter(|h| h.token == pair[1].1)
                    .map(|h| h.started)
                    .min()
                    .expect("attempted");
                let answered = hits.iter().enumerate().any(|(i, h)| {
                    h.token == pair[0].1
                        && !in_flight.contains(&i)
                        && h.finished.is_some_and(|f| f <= next_start)
                });
                assert!(
                    answered,
                    "{who}: sequence {} was sent before sequence {} was answered",
                    pair[1].0, pair[0].0
                );
            }
        }
    });
}

// ------------------------------------------------------------------------------ scenario 7

/// What one client saw during the rolling restart.
#[derive(Debug, Default)]
struct ClientReport {
    identity: String,
    session: String,
    /// (node, resumed, same session id) of every reconnection.
    reconnects: Vec<(usize, bool, bool)>,
    /// Pings answered elsewhere after the node failed (HTTP clients).
    moves: usize,
    failures: Vec<String>,
}

async fn socket_client(
    identity: String,
    token: String,
    bases: Arc<RwLock<Vec<String>>>,
    mut node: usize,
    stop: CancellationToken,
) -> (ClientReport, Option<common::cluster::Ws>) {
    let base = bases.read().unwrap_or_else(|e| e.into_inner())[node].clone();
    let (mut ws, id, _) = ws_session(&base, &token, None)
        .await
        .expect("first connection");
    let mut report = ClientReport {
        identity,
        session: id.clone(),
        ..Default::default()
    };
    loop {
        let closed = loop {
            tokio::select! {
                _ = stop.cancelled() => break false,
                m = ws_next(&mut ws, Duration::from_millis(500)) => match m {
                    Ok(_) => {}
                    Err(true) => break true,
                    Err(false) => {
                        if !ws_send(&mut ws, json!({"type": "ping"})).await {
                            break true;
                        }
                    }
                },
            }
        };
        if !closed {
            return (report, Some(ws));
        }
        // Reconnect elsewhere at once and resume the session.
        let mut tries = 0;
        loop {
            let n = bases.read().unwrap_or_else(|e| e.into_inner()).len();
            node = (node + 1) % n;
            let base = bases.read().unwrap_or_else(|e| e.into_inner())[node].clone();
            match ws_session(&base, &token, Some(&id)).await {
                Ok((next, got, resumed)) => {
                    report.reconnects.push((node, resumed, got == id));
                    ws = next;
                    break;
                }
                Err(e) => {
                    tries += 1;
                    if tries > 50 || stop.is_cancelled() {
                        report.failures.push(format!("no reconnection: {e}"));
                        return (report, None);
                    }
                    sleep_ms(50).await;
                }
            }
        }
    }
}

async fn pinging_client(
    api: Api,
    identity: String,
    token: String,
    bases: Arc<RwLock<Vec<String>>>,
    mut node: usize,
    stop: CancellationToken,
) -> ClientReport {
    let base = bases.read().unwrap_or_else(|e| e.into_inner())[node].clone();
    let id = api.open_ok(&base, &token).await;
    let mut report = ClientReport {
        identity,
        session: id.clone(),
        ..Default::default()
    };
    while !stop.is_cancelled() {
        let base = bases.read().unwrap_or_else(|e| e.into_inner())[node].clone();
        match api.ping(&base, &token, &id).await {
            204 => sleep_ms(300).await,
            404 => {
                report.failures.push(format!("ping on node{node}: 404"));
                return report;
            }
            _ => {
                let n = bases.read().unwrap_or_else(|e| e.into_inner()).len();
                node = (node + 1) % n;
                report.moves += 1;
            }
        }
    }
    report
}

#[test]
fn a_rolling_restart_with_clients_resuming_elsewhere_reports_nobody_offline() {
    if skip() {
        return;
    }
    run(async {
        let mut c = Cluster::start(Options::new(3, LEASE_MS));
        let api = c.api.clone();
        let svc = c.service(1_000, 10_000, 1_000).await;
        let bases = Arc::new(RwLock::new(
            (0..3).map(|i| c.base(i).to_string()).collect::<Vec<_>>(),
        ));
        let stop = CancellationToken::new();
        let mut sockets = Vec::new();
        for (k, who) in names("socket", 6).into_iter().enumerate() {
            let token = c.token(&svc, &who);
            sockets.push(tokio::spawn(socket_client(
                who,
                token,
                bases.clone(),
                k % 3,
                stop.clone(),
            )));
        }
        let mut pingers = Vec::new();
        for (k, who) in names("pinger", 3).into_iter().enumerate() {
            let token = c.token(&svc, &who);
            pingers.push(tokio::spawn(pinging_client(
                api.clone(),
                who,
                token,
                bases.clone(),
                k % 3,
                stop.clone(),
            )));
        }
        let mut everyone = names("socket", 6);
        everyone.extend(names("pinger", 3));
        for who in &everyone {
            api.until_online(c.base(0), &svc, who, true).await;
        }
        let cursor = api.cursor(c.base(0), &svc).await;

        for i in 0..3 {
            c.terminate(i);
            c.start_node(i);
            bases.write().unwrap_or_else(|e| e.into_inner())[i] = c.base(i).to_string();
            sleep_ms(1_500).await;
        }
        // Past the grace and a lease: a late offline would show now.
        sleep_ms(LEASE_MS + 1_000).await;
        let events = api.feed(c.base(0), &svc, cursor).await;
        stop.cancel();
        let mut kept = Vec::new();
        let mut reports = Vec::new();
        for s in sockets {
            let (report, ws) = s.await.expect("socket client");
            kept.push(ws);
            reports.push(report);
        }
        for p in pingers {
            reports.push(p.await.expect("pinging client"));
        }
        for r in &reports {
            eprintln!(
                "{}: session {}, reconnections {:?}, moves {}",
                r.identity, r.session, r.reconnects, r.moves
            );
        }
        let reachability: Vec<&Ev> = events.iter().filter(|e| e.is_reachability()).collect();
        assert!(
            reachability.is_empty(),
            "no reachability event during the rolling restart: {reachability:#?}\n{}",
            c.logs()
        );
        for r in &reports {
            assert!(r.failures.is_empty(), "{}: {:?}", r.identity, r.failures);
            if r.identity.starts_with("socket") {
                assert!(
                    !r.reconnects.is_empty(),
                    "{} was never disconnected",
                    r.identity
                );
                for (node, resumed, same) in &r.reconnects {
                    assert!(
                        *resumed && *same,
                        "{}: reconnection to node{node} did not resume {}",
                        r.identity,
                        r.session
                    );
                }
            } else {
                assert!(r.moves > 0, "{} never moved", r.identity);
            }
        }
        for i in 0..3 {
            for who in &everyone {
                assert_eq!(
                    api.is_online(c.base(i), &svc, who).await,
                    json!(true),
                    "{who} on node{i}"
                );
            }
        }
        drop(kept);
    });
}
