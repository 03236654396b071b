//! Change notices on NATS and over HTTP: no loss across crashes, no notice to a
//! subscriber without a grant, and never any content.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::process::{Command, Stdio};

use async_nats::jetstream::{self, consumer::pull};
use base64::Engine;
use common::stack::{Stack, WAIT, eventually};
use futures::StreamExt;
use reqwest::Method;
use watchword::changes::{COPY_HEADER, ORIGIN_HEADER};
use watchword::client::{ApiClient, CreateRequest, EventFilter, Notice, PutOptions};
use watchword_events::changes::NoticeKind;
use watchword_events::names::subject_token;
use watchword_events::readmodel::ReadModel;

const READER: &str = "spiffe://watchword.dev/reader";
const CHANGES: &str = "WATCHWORD_CHANGES";

fn create(name: &str) -> CreateRequest {
    CreateRequest { name: name.to_owned(), owner_group: None, description: String::new() }
}

async fn jetstream(stack: &Stack) -> jetstream::Context {
    jetstream::new(async_nats::connect(&stack.nats_url).await.expect("connect to nats-server"))
}

/// A message of the notices stream, as stored.
#[derive(Debug)]
struct RawCopy {
    subject: String,
    origin: u64,
    message_id: String,
    headers: String,
    payload: Vec<u8>,
}

/// Reads every message of the notices stream.
async fn raw_copies(js: &jetstream::Context) -> Vec<RawCopy> {
    let stream = js.get_stream(CHANGES).await.expect("the notices stream exists");
    let info = stream.get_info().await.unwrap();
    if info.state.messages == 0 {
        return Vec::new();
    }
    let mut copies = Vec::new();
    for sequence in info.state.first_sequence..=info.state.last_sequence {
        let message = stream.direct_get(sequence).await.unwrap();
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        copies.push(RawCopy {
            subject: message.subject.to_string(),
            origin: header(ORIGIN_HEADER).parse().unwrap(),
            message_id: header("Nats-Msg-Id"),
            headers: format!("{:?}", message.headers),
            payload: message.payload.to_vec(),
        });
    }
    copies
}

/// Waits until the notices stream has a complete notice of an event at or after `origin`.
async fn published_through(js: &jetstream::Context, origin: u64) -> Vec<RawCopy> {
    eventually(&format!("notices through sequence {origin}"), async || {
        let stream = js.get_stream(CHANGES).await.ok()?;
        let info = stream.get_info().await.ok()?;
        let last = stream.direct_get(info.state.last_sequence).await.ok()?;
        let copied: u64 = last.headers.get(ORIGIN_HEADER)?.as_str().parse().ok()?;
        let complete = last.headers.get(COPY_HEADER)?.as_str().split_once('/').is_some_and(|(n, c)| n == c);
        (copied >= origin && complete).then_some(())
    })
    .await;
    raw_copies(js).await
}

fn notice(copy: &RawCopy) -> Notice {
    serde_json::from_slice(&copy.payload).expect("a notice is JSON")
}

async fn put(client: &ApiClient, name: &str, content: &[u8]) -> u64 {
    client.put_secret(name, content.to_vec(), &PutOptions::default()).await.unwrap().sequence
}

/// Replaces the `[changes]` section of the server's configuration with `settings`.
fn set_changes(stack: &Stack, settings: &str) {
    let path = stack.server_config();
    let config = std::fs::read_to_string(&path).unwrap();
    let config = match config.split_once("\n[changes]\n") {
        Some((head, _)) => head.to_owned(),
        None => config,
    };
    std::fs::write(&path, format!("{config}\n[changes]\n{settings}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscriber_resumes_across_crashes_without_gap() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let js = jetstream(&stack).await;
    operator.create_group(&create("app")).await.unwrap();
    for i in 0..4 {
        let name = format!("feed/{i}");
        put(&operator, &name, b"v1").await;
        operator.command(Method::PUT, &["groups", "app", "grants", &name]).await.unwrap();
    }

    // A service's durable consumer on its group's subjects.
    let stream = js.get_stream(CHANGES).await.unwrap();
    let filter = format!("watchword.changes.{}.>", subject_token("app"));
    stream
        .create_consumer(pull::Config {
            durable_name: Some("svc".to_owned()),
            filter_subject: filter,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    // The server projects while it cannot publish, then dies: the notices wait in
    // the read model's outbox, between projection and publication.
    stack.kill_server();
    set_changes(&stack, "publish = false");
    stack.start_server();
    let operator = stack.client("operator");
    for version in 2..=4 {
        for i in 0..4 {
            put(&operator, &format!("feed/{i}"), format!("v{version}").as_bytes()).await;
        }
    }
    stack.kill_server();
    let model = ReadModel::open(&stack.data_dir().join("test.redb"), 1 << 20).unwrap();
    let waiting = model.pending_notices(0, 100).unwrap();
    let copied: BTreeSet<u64> = raw_copies(&js).await.iter().map(|c| c.origin).collect();
    let unpublished: Vec<_> = waiting.iter().filter(|n| !copied.contains(&n.sequence)).collect();
    let updates = unpublished.iter().filter(|n| n.kind == NoticeKind::Updated).count();
    assert_eq!(updates, 12, "the outbox holds the twelve updates, none of them published");
    drop(model);
    set_changes(&stack, "publish = true");
    stack.start_server();

    // A burst of writes, and SIGKILL in the middle of it.
    let operator = stack.client("operator");
    let burst = tokio::spawn({
        let operator = operator.clone();
        async move {
            for version in 5..=40 {
                for i in 0..4 {
                    let content = format!("v{version}").into_bytes();
                    if operator.put_secret(&format!("feed/{i}"), content, &PutOptions::default()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    // The service reads part of the feed, acknowledges it, and goes offline.
    let consumer: jetstream::consumer::PullConsumer = stream.get_consumer("svc").await.unwrap();
    let mut received: Vec<Notice> = Vec::new();
    let mut batch = consumer.fetch().max_messages(20).messages().await.unwrap();
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        received.push(serde_json::from_slice(&message.payload).unwrap());
        message.ack().await.unwrap();
    }
    eventually("the burst to get going", async || {
        let status = operator.status().await.ok()?;
        (status.applied_sequence > 40).then_some(())
    })
    .await;
    stack.kill_server();
    burst.await.unwrap();

    stack.start_server();
    let operator = stack.client("operator");
    let last = put(&operator, "feed/0", b"last").await;
    let copies = published_through(&js, last).await;

    // The service comes back and reads the rest with the same durable consumer.
    let expected_count = copies.iter().filter(|c| c.subject.contains(&subject_token("app"))).count();
    let unique_count =
        |received: &[Notice]| received.iter().map(|n| (n.sequence, n.groups.clone())).collect::<BTreeSet<_>>().len();
    while unique_count(&received) < expected_count {
        let before = received.len();
        let mut batch = consumer.fetch().max_messages(100).messages().await.unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            received.push(serde_json::from_slice(&message.payload).unwrap());
            message.ack().await.unwrap();
        }
        assert!(received.len() > before, "the consumer stopped after {before} of {expected_count} notices");
    }

    // Deduplicate by (sequence, group), as a service does, and compare with what
    // the read model holds: every version of every secret, once, in stream order.
    let mut seen = BTreeSet::new();
    let unique: Vec<&Notice> = received.iter().filter(|n| seen.insert((n.sequence, n.groups.clone()))).collect();
    assert_eq!(unique.len(), expected_count);
    let sequences: Vec<u64> = unique.iter().map(|n| n.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "notices out of stream order: {sequences:?}");

    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for notice in unique.iter().filter(|n| matches!(n.kind, NoticeKind::Created | NoticeKind::Updated)) {
        versions.entry(notice.secret.clone()).or_default().push(notice.version.unwrap());
    }
    let list = operator.list_secrets(Some(last)).await.unwrap();
    for secret in &list.secrets {
        // Versions 1 were written before the grant, so the group got no notice of them.
        let expected: Vec<u64> = (2..=secret.version).collect();
        assert_eq!(versions.get(&secret.name), Some(&expected), "versions of {} in the feed", secret.name);
    }
    let grants = unique.iter().filter(|n| n.kind == NoticeKind::AccessGranted).count();
    assert_eq!(grants, 4, "one access_granted notice per grant");

    // The stream itself stores each copy once.
    let ids: BTreeSet<&str> = copies.iter().map(|c| c.message_id.as_str()).collect();
    assert_eq!(ids.len(), copies.len(), "a copy was stored twice");
    let origins: Vec<u64> = copies.iter().map(|c| c.origin).collect();
    assert!(origins.windows(2).all(|w| w[0] <= w[1]), "copies out of origin order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_without_grant_receives_nothing() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let js = jetstream(&stack).await;
    operator.create_client(&create(READER)).await.unwrap();
    operator.create_group(&create("team-a")).await.unwrap();
    operator.create_group(&create("team-b")).await.unwrap();
    operator.command(Method::PUT, &["groups", "team-a", "members", READER]).await.unwrap();

    put(&operator, "a/visible", b"1").await;
    put(&operator, "b/hidden", b"1").await;
    put(&operator, "c/ungranted", b"1").await;
    operator.command(Method::PUT, &["groups", "team-a", "grants", "a/visible"]).await.unwrap();
    operator.command(Method::PUT, &["groups", "team-b", "grants", "b/hidden"]).await.unwrap();
    put(&operator, "b/hidden", b"2").await;
    put(&operator, "c/ungranted", b"2").await;
    let last = put(&operator, "a/visible", b"2").await;
    let copies = published_through(&js, last).await;

    // On NATS: team-a's subjects carry only team-a's secret.
    let team_a = format!("watchword.changes.{}.", subject_token("team-a"));
    let for_team_a: BTreeSet<String> =
        copies.iter().filter(|c| c.subject.starts_with(&team_a)).map(|c| notice(c).secret).collect();
    assert_eq!(for_team_a, BTreeSet::from(["a/visible".to_owned()]));
    let ungranted = copies.iter().find(|c| notice(c).secret == "c/ungranted").expect("a notice of c/ungranted");
    assert!(ungranted.subject.starts_with("watchword.changes._."), "{}", ungranted.subject);

    // Over HTTP: the reader sees its secret only, with only its own group.
    let mut feed = stack.client("reader").events(&EventFilter::default(), Some(0)).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let notice = feed.next().await.unwrap().expect("the feed stays open");
        let done = notice.sequence == last;
        seen.push(notice);
        if done {
            break;
        }
    }
    // Authorization happens at delivery, so the notice of the version written
    // before the grant arrives too, without groups.
    let kinds: Vec<NoticeKind> = seen.iter().map(|n| n.kind).collect();
    assert_eq!(kinds, vec![NoticeKind::Created, NoticeKind::AccessGranted, NoticeKind::Updated]);
    for notice in &seen {
        assert_eq!(notice.secret, "a/visible", "the reader received {notice:?}");
        assert!(notice.groups.iter().all(|g| g == "team-a"), "groups of {notice:?}");
    }
    assert_eq!(seen[2].groups, vec!["team-a".to_owned()]);

    // An administrator receives every notice, and the filters apply.
    let filter = EventFilter { prefix: Some("c/".to_owned()), ..EventFilter::default() };
    let mut feed = operator.events(&filter, Some(0)).await.unwrap();
    let first = feed.next().await.unwrap().unwrap();
    assert_eq!((first.secret.as_str(), first.kind), ("c/ungranted", NoticeKind::Created));
    assert!(first.groups.is_empty());

    // So does an auditor, with every group of a notice.
    operator.set_roles("spiffe://watchword.dev/auditor", &["auditor"]).await.unwrap();
    let filter =
        EventFilter { group: Some("team-b".to_owned()), kinds: vec!["updated".to_owned()], ..Default::default() };
    let mut feed = stack.client("auditor").events(&filter, Some(0)).await.unwrap();
    let hidden = feed.next().await.unwrap().unwrap();
    assert_eq!((hidden.secret.as_str(), hidden.version), ("b/hidden", Some(2)));
    assert_eq!(hidden.groups, vec!["team-b".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_hold_no_content() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let js = jetstream(&stack).await;
    operator.create_group(&create("app")).await.unwrap();

    let mut contents = Vec::new();
    let mut last = 0;
    for i in 0..6 {
        let content: [u8; 24] = rand::random();
        let name = format!("secret-{i}");
        last = put(&operator, &name, &content).await;
        operator.command(Method::PUT, &["groups", "app", "grants", &name]).await.unwrap();
        last = last.max(put(&operator, &name, &content).await);
        contents.push(content);
    }
    let copies = published_through(&js, last).await;
    assert!(copies.len() >= 18, "expected created, access_granted and updated notices, got {}", copies.len());

    let mut stored = Vec::new();
    for copy in &copies {
        stored.extend_from_slice(&copy.payload);
        stored.extend_from_slice(copy.headers.as_bytes());
        stored.extend_from_slice(copy.subject.as_bytes());
    }
    for content in &contents {
        let forms = [
            content.to_vec(),
            hex::encode(content).into_bytes(),
            hex::encode_upper(content).into_bytes(),
            base64::engine::general_purpose::STANDARD.encode(content).into_bytes(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(content).into_bytes(),
        ];
        for form in forms {
            assert!(!stored.windows(form.len()).any(|w| w == form.as_slice()), "content found in the notices stream");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_prints_json_notices() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let status = stack.cli("operator", &["status"], b"");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let after = operator.status().await.unwrap().applied_sequence;

    let mut child = Command::new(env!("CARGO_BIN_EXE_watchword"))
        .args(["events", "watch", "--output", "json", "--after", &after.to_string(), "--kind", "created"])
        .env("WATCHWORD_CONFIG", stack.dir.path().join("cli-operator.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run watchword events watch");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });

    let sequence = put(&operator, "watched/one", b"x").await;
    let line = receiver.recv_timeout(WAIT).expect("a notice line from the CLI");
    child.kill().unwrap();
    child.wait().unwrap();

    let notice: Notice = serde_json::from_str(&line).expect("a JSON notice");
    assert_eq!(notice.secret, "watched/one");
    assert_eq!(notice.kind, NoticeKind::Created);
    assert_eq!(notice.sequence, sequence);
    assert_eq!(notice.version, Some(1));
}

/// Connects to nats-server as one of the users of `ops/nats/changes-accounts.conf`.
async fn connect_as(
    url: &str,
    user: &str,
    password: &str,
    errors: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> async_nats::Client {
    let mut options = async_nats::ConnectOptions::new()
        .user_and_password(user.to_owned(), password.to_owned())
        .custom_inbox_prefix(format!("_INBOX_{user}"));
    if let Some(errors) = errors {
        options = options.event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors.send(error.to_string());
                }
            }
        });
    }
    options.connect(url).await.expect("connect to nats-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_permissions_scope_service_to_group() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/nats/changes-accounts.conf");
    let text = std::fs::read_to_string(&config).unwrap();
    let app = subject_token("app");
    assert!(text.contains(&format!("watchword.changes.{app}.>")), "the example scopes the group app");
    let store = dir.path().join("nats");
    let copy = dir.path().join("changes-accounts.conf");
    std::fs::write(&copy, text.replace("\"nats-data/changes\"", &format!("{store:?}"))).unwrap();
    let (mut nats, url) = common::stack::start_nats_with(dir.path(), Some(&copy));

    // The server's user creates the notices stream, and an operator the service's consumer.
    let server = jetstream::new(connect_as(&url, "watchword-server", "dev-server-password", None).await);
    let nats_config = watchword::config::NatsConfig::default();
    let changes = watchword::changes::ChangesConfig::default();
    let stream = watchword::stream::ensure_changes_stream(&server, &nats_config, &changes).await.unwrap();
    let app_subjects = format!("watchword.changes.{app}.>");
    stream
        .create_consumer(pull::Config {
            durable_name: Some("svc-app".to_owned()),
            filter_subject: app_subjects.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    let (errors_sender, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let service = connect_as(&url, "svc-app", "dev-svc-app-password", Some(errors_sender)).await;
    let billing = watchword::changes::change_subject(Some("billing"), "billing/key");
    let _denied = service.subscribe(billing.clone()).await.unwrap();
    let error = tokio::time::timeout(WAIT, errors.recv()).await.expect("a permissions violation").unwrap();
    assert!(error.to_lowercase().contains("permissions violation"), "{error}");
    let mut live = service.subscribe(app_subjects.clone()).await.unwrap();
    service.flush().await.unwrap();

    for subject in [billing.clone(), watchword::changes::change_subject(Some("app"), "app/key")] {
        let ack = server.publish(subject.clone(), subject.clone().into()).await.unwrap();
        ack.await.unwrap();
    }

    // Live: only the group's subject arrives.
    let message = tokio::time::timeout(WAIT, live.next()).await.unwrap().unwrap();
    assert!(message.subject.starts_with(&format!("watchword.changes.{app}.")));

    // Durable: the operator's consumer gives only the group's notices.
    let service_js = jetstream::new(service.clone());
    let consumer: jetstream::consumer::PullConsumer =
        service_js.get_consumer_from_stream("svc-app", CHANGES).await.expect("the service reads its consumer");
    let mut batch = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut subjects = Vec::new();
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        subjects.push(message.subject.to_string());
        message.ack().await.unwrap();
    }
    assert_eq!(subjects, vec![watchword::changes::change_subject(Some("app"), "app/key")]);

    // The service cannot make itself a consumer of every group.
    let widened = pull::Config { durable_name: Some("mine".to_owned()), ..Default::default() };
    assert!(service_js.create_consumer_on_stream(widened, CHANGES).await.is_err(), "creating a consumer is denied");

    nats.kill().unwrap();
    nats.wait().unwrap();
}

/// Starts a second `watchword serve` on the stack's NATS and HSM token, with its
/// own read model and port. Returns the process and the path of its log.
fn start_second_node(stack: &Stack) -> (std::process::Child, std::path::PathBuf) {
    let address = stack.server_url.trim_start_matches("https://");
    let config = std::fs::read_to_string(stack.server_config()).unwrap();
    let config = config.replace(address, "127.0.0.1:0").replace("data_dir = \"data\"", "data_dir = \"data-2\"");
    let path = stack.dir.path().join("server-2.toml");
    std::fs::write(&path, config).unwrap();
    let ready = stack.dir.path().join("server-2.ready");
    let log_path = stack.dir.path().join("server-2.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_watchword"))
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--ready-file")
        .arg(&ready)
        .env("SOFTHSM2_CONF", &stack.token.conf)
        .env("RUST_LOG", "info,watchword=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn a second watchword serve");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&ready).map_or(true, |a| a.trim().is_empty()) {
        assert!(
            start.elapsed() < WAIT,
            "the second node did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, log_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_store_each_copy_once() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let js = jetstream(&stack).await;
    for group in ["app", "ops"] {
        operator.create_group(&create(group)).await.unwrap();
    }
    for i in 0..5 {
        let name = format!("shared/{i}");
        put(&operator, &name, b"v1").await;
        for group in ["app", "ops"] {
            operator.command(Method::PUT, &["groups", group, "grants", &name]).await.unwrap();
        }
    }
    let (mut second, second_log) = start_second_node(&stack);

    // Both nodes publish the same notices, each copy to two groups; the first
    // node dies part-way, and the second carries on alone.
    for version in 2..=10 {
        for i in 0..5 {
            put(&operator, &format!("shared/{i}"), format!("v{version}").as_bytes()).await;
        }
    }
    stack.kill_server();
    stack.start_server();
    let operator = stack.client("operator");
    let mut last = 0;
    for i in 0..5 {
        last = put(&operator, &format!("shared/{i}"), b"last").await;
    }
    let copies = published_through(&js, last).await;
    second.kill().unwrap();
    second.wait().unwrap();

    let ids: BTreeSet<&str> = copies.iter().map(|c| c.message_id.as_str()).collect();
    assert_eq!(ids.len(), copies.len(), "a copy was stored twice");
    let origins: Vec<u64> = copies.iter().map(|c| c.origin).collect();
    assert!(origins.windows(2).all(|w| w[0] <= w[1]), "copies out of event order");

    // Every version after the grants reached both groups exactly once.
    let mut per_group: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for copy in &copies {
        let notice = notice(copy);
        if notice.kind == NoticeKind::Updated {
            per_group.entry((notice.secret, notice.groups[0].clone())).or_default().push(notice.version.unwrap());
        }
    }
    assert_eq!(per_group.len(), 10, "five secrets in two groups: {:?}", per_group.keys());
    for (key, versions) in &per_group {
        assert_eq!(versions, &(2..=11).collect::<Vec<u64>>(), "versions of {key:?}");
    }
    let second_published = std::fs::read_to_string(second_log).unwrap().matches("change notice published").count();
    eprintln!("the second node stored {second_published} of {} copies", copies.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_feed_ends_on_shutdown_and_resumes() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let js = jetstream(&stack).await;
    let mut last = 0;
    for version in 1..=4 {
        last = put(&operator, "resumed", format!("v{version}").as_bytes()).await;
    }
    published_through(&js, last).await;

    let mut feed = operator.events(&EventFilter::default(), Some(0)).await.unwrap();
    let mut received = Vec::new();
    for _ in 0..2 {
        received.push(feed.next().await.unwrap().expect("a notice"));
    }

    // SIGTERM ends the open feed cleanly, and the server exits.
    stack.terminate_server();
    let mut ended = false;
    while !ended {
        match feed.next().await {
            Ok(Some(notice)) => received.push(notice),
            Ok(None) => ended = true,
            Err(error) => panic!("the feed failed instead of ending: {error}"),
        }
    }

    stack.start_server();
    let operator = stack.client("operator");
    let final_sequence = put(&operator, "resumed", b"v5").await;
    let after = received.last().unwrap().sequence;
    let mut feed = operator.events(&EventFilter::default(), Some(after)).await.unwrap();
    loop {
        let notice = feed.next().await.unwrap().expect("the feed stays open");
        received.push(notice);
        if received.last().unwrap().sequence == final_sequence {
            break;
        }
    }
    let versions: Vec<u64> = received.iter().map(|n| n.version.unwrap()).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5], "each notice once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_follows_configuration() {
    let mut stack = Stack::start().await;
    let js = jetstream(&stack).await;
    let config = js.get_stream(CHANGES).await.unwrap().get_info().await.unwrap().config;
    assert_eq!(config.max_age, std::time::Duration::from_secs(30 * 24 * 60 * 60), "30 days by default");
    assert_eq!(config.max_bytes, 1024 * 1024 * 1024, "1 GiB by default");

    stack.kill_server();
    set_changes(&stack, "max_age_days = 7\nmax_bytes_mib = 64");
    stack.start_server();
    let config = js.get_stream(CHANGES).await.unwrap().get_info().await.unwrap().config;
    assert_eq!(config.max_age, std::time::Duration::from_secs(7 * 24 * 60 * 60));
    assert_eq!(config.max_bytes, 64 * 1024 * 1024);
}
