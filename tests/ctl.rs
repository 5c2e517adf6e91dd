//! `warren ctl` against a running broker's management API: the everyday
//! operations a script does, and its exit codes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{bounded, free_port, Broker};

/// Run `warren ctl` with `args`; exit code and stdout.
async fn ctl(broker: &Broker, args: &[&str]) -> (i32, String) {
    let url = broker.api_url().expect("api on");
    let url = url.trim_end_matches("/api").to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("ctl")
            .args(["--url", &url])
            .args(&args)
            .output()
            .expect("run warren ctl")
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn everyday_operations_from_the_command_line() {
    bounded(Duration::from_secs(30), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        assert_eq!(
            ctl(&broker, &["declare", "queue", "jobs", "--durable"])
                .await
                .0,
            0
        );
        assert_eq!(
            ctl(
                &broker,
                &["declare", "exchange", "events", "topic", "--durable"]
            )
            .await
            .0,
            0
        );
        assert_eq!(
            ctl(&broker, &["bind", "events", "jobs", "job.#"]).await.0,
            0
        );
        let (code, out) = ctl(&broker, &["publish", "events", "job.new", "hello"]).await;
        assert_eq!((code, out.trim()), (0, "routed: true"));
        let (_, out) = ctl(&broker, &["list", "queues"]).await;
        let row: Vec<&str> = out.lines().nth(1).expect("a row").split('\t').collect();
        assert_eq!(&row[..3], ["jobs", "1", "1"], "{out}");
        let (_, out) = ctl(&broker, &["get", "jobs"]).await;
        assert!(out.contains("hello"), "{out}");
        assert_eq!(
            ctl(&broker, &["add-user", "app", "pw", "management"])
                .await
                .0,
            0
        );
        assert_eq!(
            ctl(&broker, &["set-permissions", "app", "^app-", ".*", ".*"])
                .await
                .0,
            0
        );
        let (_, out) = ctl(&broker, &["list", "permissions"]).await;
        assert!(out.contains("app\t/\t^app-\t.*\t.*"), "{out}");
        assert_eq!(
            ctl(
                &broker,
                &[
                    "set-policy",
                    "cap",
                    "^jobs$",
                    r#"{"max-length": 1}"#,
                    "--apply-to",
                    "queues"
                ]
            )
            .await
            .0,
            0
        );
        let dir = common::fresh_data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("defs.json");
        assert_eq!(ctl(&broker, &["export", file.to_str().unwrap()]).await.0, 0);
        let defs: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(defs["queues"][0]["name"], "jobs");
        // Into another broker.
        let other = Broker::start_with(|c| c.management_port = free_port()).await;
        assert_eq!(ctl(&other, &["import", file.to_str().unwrap()]).await.0, 0);
        let (_, out) = ctl(&other, &["list", "bindings"]).await;
        assert!(out.contains("events\tjobs\tqueue\tjob.#"), "{out}");
        let _ = std::fs::remove_dir_all(&dir);
        // Failures: 1 with the API's reason, 2 for usage.
        assert_eq!(ctl(&broker, &["delete", "queue", "missing"]).await.0, 1);
        assert_eq!(ctl(&broker, &["frobnicate"]).await.0, 2);
    })
    .await;
}
