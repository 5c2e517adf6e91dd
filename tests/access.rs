//! Users, vhosts and permissions at run time: made through the management
//! API (with rabbitmq_http_client, as rabbitmqadmin v2 makes them, the
//! password hashed client-side), enforced on AMQP with RabbitMQ 3.10's
//! codes and texts (recorded against it), durable across a restart, and
//! carried by a definitions export into a fresh broker.

mod common;

use std::time::Duration;

use common::{bounded, free_port, reply_code, reply_text, Broker};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use rabbitmq_http_client::api::Client;
use rabbitmq_http_client::password_hashing;
use rabbitmq_http_client::requests::{Permissions, QueueParams, UserParams, VirtualHostParams};

use serde_json::json;

type Api = Client<String, &'static str, &'static str>;

fn with_api(c: &mut warren::Config) {
    c.management_port = free_port();
}

fn api(broker: &Broker) -> Api {
    Client::new(broker.api_url().expect("api on"), "guest", "guest")
}

/// A user `name` with password `pw`, hashed client-side as rabbitmqadmin
/// v2 does.
async fn add_user(api: &Api, name: &str, pw: &str, tags: &str) {
    let salt = password_hashing::salt();
    let hash = password_hashing::base64_encoded_salted_password_hash_sha256(&salt, pw);
    api.create_user(&UserParams::new(name, &hash, tags))
        .await
        .expect("create user");
}

async fn grant(api: &Api, user: &str, vhost: &str, configure: &str, write: &str, read: &str) {
    let p = Permissions {
        user,
        vhost,
        configure,
        write,
        read,
    };
    api.declare_permissions(&p).await.expect("permissions");
}

/// What a refused method is, and the text RabbitMQ refuses it with.
type Case = (&'static str, String);
/// A method tried on a fresh channel.
type Attempt = Box<dyn Fn(lapin::Channel) -> futures_lite::future::Boxed<lapin::Result<()>>>;

async fn connect_as(
    broker: &Broker,
    user: &str,
    pw: &str,
    vhost: &str,
) -> lapin::Result<Connection> {
    Connection::connect(
        &broker.url_as(user, pw, vhost),
        ConnectionProperties::default(),
    )
    .await
}

#[tokio::test]
async fn permissions_are_enforced_with_rabbitmq_texts() {
    bounded(Duration::from_secs(30), async {
        let broker = Broker::start_with(with_api).await;
        let api = api(&broker);
        add_user(&api, "limited", "pw", "").await;
        grant(&api, "limited", "/", "^conf-", "^write-", "^read-").await;
        let (_g, guest) = broker.channel().await;
        for q in ["read-q", "write-q", "x-q"] {
            guest.queue_declare(q.into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        }
        for x in ["read-x", "write-x"] {
            guest.exchange_declare(x.into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default()).await.unwrap();
        }
        let conn = connect_as(&broker, "limited", "pw", "%2f").await.expect("limited logs in");
        let refused = |what: &'static str, kind: &'static str, name: &'static str| {
            (what, format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user 'limited'"))
        };
        let cases: Vec<(Case, Attempt)> = vec![
            (refused("declare", "queue", "x-q"), Box::new(|ch| Box::pin(async move {
                ch.queue_declare("x-q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.map(|_| ())
            }))),
            (refused("bind without write on the queue", "queue", "read-q"), Box::new(|ch| Box::pin(async move {
                ch.queue_bind("read-q".into(), "read-x".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await
            }))),
            (refused("bind without read on the exchange", "exchange", "write-x"), Box::new(|ch| Box::pin(async move {
                ch.queue_bind("write-q".into(), "write-x".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await
            }))),
            (refused("get without read", "queue", "write-q"), Box::new(|ch| Box::pin(async move {
                ch.basic_get("write-q".into(), BasicGetOptions::default()).await.map(|_| ())
            }))),
        ];
        for ((what, text), attempt) in cases {
            let ch = conn.create_channel().await.unwrap();
            let e = attempt(ch).await.expect_err(what);
            assert_eq!(reply_code(&e), Some(403), "{what}: {e:?}");
            assert!(reply_text(&e).contains(&text), "{what}: {}", reply_text(&e));
        }
        // A publish is refused asynchronously, with the channel's close.
        let mut events = conn.events_listener();
        let ch = conn.create_channel().await.unwrap();
        let props = BasicProperties::default();
        let publish = ch.basic_publish("".into(), "read-q".into(), BasicPublishOptions::default(), b"x", props);
        publish.await.expect("sent");
        let e = common::next_channel_error(&mut events).await;
        assert_eq!(reply_code(&e), Some(403), "{e:?}");
        let text = "access to exchange 'amq.default' in vhost '/' refused for user 'limited'";
        assert!(reply_text(&e).contains(text), "{}", reply_text(&e));
        // What the regexes allow works.
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare("conf-q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("configure allowed");
        ch.queue_bind("write-q".into(), "read-x".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind allowed");
        ch.basic_get("read-q".into(), BasicGetOptions::default()).await.expect("read allowed");

        // No permissions in a vhost: 530 at connection.open.
        api.create_vhost(&VirtualHostParams::named("other")).await.expect("vhost");
        let e = connect_as(&broker, "limited", "pw", "other").await.expect_err("no permissions there");
        assert_eq!(reply_code(&e), Some(530), "{e:?}");
        assert!(reply_text(&e).contains("access to vhost 'other' refused for user 'limited'"), "{}", reply_text(&e));
        // Permissions changed at run time apply at once.
        grant(&api, "limited", "/", "^conf-", "^write-|^$", "^read-").await;
        grant(&api, "limited", "other", ".*", ".*", ".*").await;
        connect_as(&broker, "limited", "pw", "other").await.expect("granted");
    })
    .await;
}

#[tokio::test]
async fn deleting_a_vhost_closes_its_connections_and_removes_its_queues() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(with_api).await;
        let api = api(&broker);
        api.create_vhost(&VirtualHostParams::named("tenant"))
            .await
            .unwrap();
        grant(&api, "guest", "tenant", ".*", ".*", ".*").await;
        api.declare_queue(
            "tenant",
            &QueueParams::new_durable_classic_queue("jobs", None),
        )
        .await
        .unwrap();
        let conn = connect_as(&broker, "guest", "guest", "tenant")
            .await
            .expect("open tenant");
        api.delete_vhost("tenant", false).await.expect("delete");
        let closed = async {
            while conn.status().connected() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("its connection was closed");
        let e = connect_as(&broker, "guest", "guest", "tenant")
            .await
            .expect_err("gone");
        assert_eq!(reply_code(&e), Some(530));
        // Recreated, it is empty.
        api.create_vhost(&VirtualHostParams::named("tenant"))
            .await
            .unwrap();
        assert!(api.get_queue_info("tenant", "jobs").await.is_err());
    })
    .await;
}

#[tokio::test]
async fn users_vhosts_and_permissions_survive_a_restart() {
    bounded(Duration::from_secs(30), async {
        let dir = common::fresh_data_dir();
        let port = free_port();
        let broker = Broker::start_in(dir.clone(), |c| c.management_port = port).await;
        let api = api(&broker);
        add_user(&api, "app", "s3cret", "monitoring").await;
        api.create_vhost(&VirtualHostParams::named("app-vh"))
            .await
            .unwrap();
        grant(&api, "app", "app-vh", "", "^events$", "").await;
        api.delete_user("guest", false)
            .await
            .expect("guest removed");
        broker.stop().await;

        // The config still lists guest: it seeds only a fresh data dir.
        let broker = Broker::start_in(dir.clone(), |c| c.management_port = free_port()).await;
        let e = connect_as(&broker, "guest", "guest", "%2f")
            .await
            .expect_err("guest stays deleted");
        assert_eq!(reply_code(&e), Some(403), "{e:?}");
        let conn = connect_as(&broker, "app", "s3cret", "app-vh")
            .await
            .expect("app logs in");
        let ch = conn.create_channel().await.unwrap();
        let e = ch
            .queue_declare(
                "q".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect_err("no configure");
        assert_eq!(reply_code(&e), Some(403));
        let me = Client::new(broker.api_url().unwrap(), "app", "s3cret");
        assert_eq!(
            me.current_user().await.expect("monitoring user").name,
            "app"
        );
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn definitions_exported_from_one_broker_rebuild_another() {
    bounded(Duration::from_secs(30), async {
        let from = Broker::start_with(with_api).await;
        let a = api(&from);
        add_user(&a, "svc", "pw", "management").await;
        a.create_vhost(&VirtualHostParams::named("shop"))
            .await
            .unwrap();
        grant(&a, "svc", "shop", "^svc-", ".*", ".*").await;
        grant(&a, "guest", "shop", ".*", ".*", ".*").await;
        let conn = connect_as(&from, "guest", "guest", "shop").await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "orders".into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare("eu".into(), common::durable(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "eu".into(),
            "orders".into(),
            "eu.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let exported = a
            .export_cluster_wide_definitions_as_data()
            .await
            .expect("export");
        let json = a
            .export_cluster_wide_definitions()
            .await
            .expect("export text");

        let to = Broker::start_with(with_api).await;
        let b = api(&to);
        b.import_definitions(serde_json::from_str(&json).unwrap())
            .await
            .expect("import");
        let imported = b
            .export_cluster_wide_definitions_as_data()
            .await
            .expect("export again");
        assert_eq!(imported.queues, exported.queues);
        assert_eq!(imported.exchanges, exported.exchanges);
        assert_eq!(imported.bindings, exported.bindings);
        assert_eq!(imported.permissions, exported.permissions);
        assert_eq!(imported.users.len(), exported.users.len());
        // The imported user logs in with its password, and routing works.
        let conn = connect_as(&to, "svc", "pw", "shop")
            .await
            .expect("svc logs in");
        let ch = conn.create_channel().await.unwrap();
        ch.basic_publish(
            "orders".into(),
            "eu.de".into(),
            BasicPublishOptions::default(),
            b"o1",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let got = ch
            .basic_get("eu".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        assert!(got.is_some(), "the imported binding routes");
    })
    .await;
}

#[tokio::test]
async fn management_users_see_only_their_vhosts() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(with_api).await;
        let api = api(&broker);
        add_user(&api, "mgr", "pw", "management").await;
        add_user(&api, "plain", "pw", "").await;
        api.create_vhost(&VirtualHostParams::named("secret"))
            .await
            .unwrap();
        api.declare_queue("secret", &QueueParams::new_durable_classic_queue("q", None))
            .await
            .unwrap();
        let mgr = Client::new(broker.api_url().unwrap(), "mgr", "pw");
        // As RabbitMQ 3.10 answered: an empty list, and 401 for the vhost.
        assert!(mgr.list_queues().await.unwrap().is_empty());
        assert!(mgr.list_vhosts().await.unwrap().is_empty());
        let e = mgr
            .list_queues_in("secret")
            .await
            .expect_err("not its vhost");
        assert!(format!("{e:?}").contains("401"), "{e:?}");
        assert!(mgr.list_users().await.is_err(), "not an administrator");
        grant(&api, "mgr", "secret", ".*", ".*", ".*").await;
        assert_eq!(mgr.list_queues_in("secret").await.unwrap().len(), 1);
        let plain = Client::new(broker.api_url().unwrap(), "plain", "pw");
        assert!(plain.current_user().await.is_err(), "no management tag");
    })
    .await;
}

#[tokio::test]
async fn a_definitions_file_is_loaded_at_boot() {
    bounded(Duration::from_secs(20), async {
        let dir = common::fresh_data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("defs.json");
        // A RabbitMQ 3.10 export's shape (hash: "test12", salt 908DC60A).
        let defs = serde_json::json!({
            "rabbit_version": "3.10.8",
            "users": [{"name": "ops", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}}],
            "vhosts": [{"name": "boot", "limits": [], "metadata": {"description": "", "tags": []}}],
            "permissions": [{"user": "ops", "vhost": "boot", "configure": ".*", "write": ".*", "read": ".*"}],
            "policies": [{"vhost": "boot", "name": "cap", "pattern": "^tasks$", "apply-to": "queues",
                          "definition": {"max-length": 1}, "priority": 0}],
            "queues": [{"name": "tasks", "vhost": "boot", "durable": true, "auto_delete": false, "arguments": {}}],
            "exchanges": [], "bindings": []
        });
        std::fs::write(&file, defs.to_string()).unwrap();
        let path = file.to_str().unwrap().to_string();
        let broker = Broker::start_with(|c| c.load_definitions = path.clone()).await;
        let conn = connect_as(&broker, "ops", "test12", "boot").await.expect("the imported user");
        let ch = conn.create_channel().await.unwrap();
        for i in 0..3u8 {
            common::publish(&ch, "", "tasks", &[i]).await;
        }
        assert_eq!(common::ready_count(&ch, "tasks").await.unwrap(), 1, "its policy applies");
        broker.stop().await;

        std::fs::write(&file, "{not json").unwrap();
        let cfg = warren::Config {
            port: 0,
            management_port: 0,
            prometheus_port: 0,
            log_level: "off".into(),
            data_dir: dir.join("data"),
            load_definitions: path,
            ..Default::default()
        };
        let e = warren::RunningServer::start(cfg).await.expect_err("a broken file stops the boot");
        assert!(e.to_string().contains("load_definitions"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn topic_permissions_limit_routing_keys_on_topic_exchanges() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(with_api).await;
        let api = api(&broker);
        add_user(&api, "eu", "pw", "").await;
        grant(&api, "eu", "/", ".*", ".*", ".*").await;
        let body = serde_json::json!({"exchange": "amq.topic", "write": "^eu\\.", "read": ".*"});
        let url = format!("{}/topic-permissions/%2F/eu", broker.api_url().unwrap());
        let resp = reqwest::Client::new().put(url).basic_auth("guest", Some("guest")).json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let conn = connect_as(&broker, "eu", "pw", "%2f").await.unwrap();
        let mut events = conn.events_listener();
        let ch = conn.create_channel().await.unwrap();
        let props = BasicProperties::default();
        ch.basic_publish("amq.topic".into(), "eu.orders".into(), BasicPublishOptions::default(), b"ok", props.clone()).await.unwrap();
        ch.queue_declare("sync".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("still open");
        ch.basic_publish("amq.topic".into(), "us.orders".into(), BasicPublishOptions::default(), b"no", props).await.unwrap();
        let e = common::next_channel_error(&mut events).await;
        assert_eq!(reply_code(&e), Some(403), "{e:?}");
        let text = "access to topic 'us.orders' in exchange 'amq.topic' in vhost '/' refused for user 'eu'";
        assert!(reply_text(&e).contains(text), "{}", reply_text(&e));
    })
    .await;
}

#[tokio::test]
async fn dead_letter_and_alternate_exchanges_and_topic_binds_need_permissions() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(with_api).await;
        let api = api(&broker);
        add_user(&api, "lim", "pw", "").await;
        grant(&api, "lim", "/", "^lim", "^lim", "^lim").await;
        let conn = connect_as(&broker, "lim", "pw", "%2f").await.unwrap();
        // As RabbitMQ: a dead-letter exchange needs write on it (and read
        // on the queue); an alternate exchange write on it (and read on
        // the exchange declared).
        let args = common::table(&[(
            "x-dead-letter-exchange",
            lapin::types::AMQPValue::LongString("amq.fanout".into()),
        )]);
        let ch = conn.create_channel().await.unwrap();
        let e = ch
            .queue_declare("lim.q".into(), QueueDeclareOptions::default(), args)
            .await
            .expect_err("no write on amq.fanout");
        assert!(
            reply_text(&e)
                .contains("access to exchange 'amq.fanout' in vhost '/' refused for user 'lim'"),
            "{}",
            reply_text(&e)
        );
        let args = common::table(&[(
            "alternate-exchange",
            lapin::types::AMQPValue::LongString("amq.fanout".into()),
        )]);
        let ch = conn.create_channel().await.unwrap();
        let e = ch
            .exchange_declare(
                "lim.x".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                args,
            )
            .await
            .expect_err("no write on amq.fanout");
        assert!(
            reply_text(&e).contains("access to exchange 'amq.fanout'"),
            "{}",
            reply_text(&e)
        );
        // Topic read permissions limit binding keys.
        let body = serde_json::json!({"exchange": "lim.topic", "write": ".*", "read": "^eu\\."});
        let url = format!("{}/topic-permissions/%2F/lim", broker.api_url().unwrap());
        reqwest::Client::new()
            .put(url)
            .basic_auth("guest", Some("guest"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            "lim.topic".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "lim.q2".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "lim.q2".into(),
            "lim.topic".into(),
            "eu.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("allowed key");
        let e = ch
            .queue_bind(
                "lim.q2".into(),
                "lim.topic".into(),
                "us.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect_err("refused key");
        assert!(
            reply_text(&e).contains("access to topic 'us.#' in exchange 'lim.topic'"),
            "{}",
            reply_text(&e)
        );
    })
    .await;
}

#[tokio::test]
async fn api_writes_need_the_same_permissions_as_amqp() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(with_api).await;
        let api = api(&broker);
        add_user(&api, "mon", "pw", "monitoring").await;
        add_user(&api, "pm", "pw", "policymaker").await;
        api.declare_queue("/", &QueueParams::new_durable_classic_queue("victim", None)).await.unwrap();
        api.publish_message("/", "amq.default", "victim", "secret", Default::default()).await.unwrap();
        let base = broker.api_url().unwrap();
        let as_user = |user: &'static str, method: &'static str, path: &'static str, body: serde_json::Value| {
            let url = format!("{base}{path}");
            async move {
                let resp = reqwest::Client::new()
                    .request(method.parse().unwrap(), url)
                    .basic_auth(user, Some("pw"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                resp.status().as_u16()
            }
        };
        // A monitoring user sees everything but changes nothing without
        // permissions in the vhost.
        assert_eq!(as_user("mon", "GET", "/queues/%2F/victim", json!({})).await, 200);
        for (method, path, body) in [
            ("POST", "/queues/%2F/victim/get", json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})),
            ("POST", "/exchanges/%2F/amq.default/publish", json!({"routing_key": "victim", "payload": "x", "payload_encoding": "string", "properties": {}})),
            ("DELETE", "/queues/%2F/victim/contents", json!({})),
            ("DELETE", "/queues/%2F/victim", json!({})),
            ("PUT", "/queues/%2F/new", json!({"durable": true})),
            ("POST", "/bindings/%2F/e/amq.direct/q/victim", json!({"routing_key": "k"})),
        ] {
            assert_eq!(as_user("mon", method, path, body).await, 401, "{method} {path}");
        }
        // A policymaker without access to the vhost cannot police it.
        let policy = json!({"pattern": ".*", "definition": {"max-length": 0}});
        assert_eq!(as_user("pm", "PUT", "/policies/%2F/wipe", policy).await, 401);
        assert_eq!(api.get_queue_info("/", "victim").await.unwrap().message_count, 1);
    })
    .await;
}

#[tokio::test]
async fn vhost_and_user_limits_are_stored_and_shown() {
    bounded(Duration::from_secs(20), async {
        let dir = common::fresh_data_dir();
        let broker = Broker::start_in(dir.clone(), with_api).await;
        let base = broker.api_url().unwrap();
        let http = reqwest::Client::new();
        let put = |path: String, body: serde_json::Value| {
            http.put(format!("{base}{path}"))
                .basic_auth("guest", Some("guest"))
                .json(&body)
                .send()
        };
        let status = |r: reqwest::Response| r.status().as_u16();
        assert_eq!(
            status(
                put(
                    "/vhost-limits/%2F/max-connections".into(),
                    json!({"value": 10})
                )
                .await
                .unwrap()
            ),
            204
        );
        assert_eq!(
            status(
                put(
                    "/user-limits/guest/max-channels".into(),
                    json!({"value": "5"})
                )
                .await
                .unwrap()
            ),
            204
        );
        assert_eq!(
            status(
                put("/vhost-limits/%2F/max-bananas".into(), json!({"value": 1}))
                    .await
                    .unwrap()
            ),
            400
        );
        assert_eq!(
            status(
                put("/vhost-limits/nope/max-queues".into(), json!({"value": 1}))
                    .await
                    .unwrap()
            ),
            404
        );
        assert_eq!(
            status(
                put("/vhost-limits/%2F/max-queues".into(), json!({"value": "x"}))
                    .await
                    .unwrap()
            ),
            400
        );
        broker.stop().await;
        let broker = Broker::start_in(dir.clone(), with_api).await;
        let base = broker.api_url().unwrap();
        let get = |path: &str| {
            let url = format!("{base}{path}");
            async move {
                let r = reqwest::Client::new()
                    .get(url)
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await
                    .unwrap();
                r.json::<serde_json::Value>().await.unwrap()
            }
        };
        assert_eq!(
            get("/vhost-limits").await,
            json!([{"vhost": "/", "value": {"max-connections": 10}}])
        );
        assert_eq!(
            get("/user-limits/guest").await,
            json!([{"user": "guest", "value": {"max-channels": 5}}])
        );
        let r = reqwest::Client::new()
            .delete(format!("{base}/vhost-limits/%2F/max-connections"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert_eq!(get("/vhost-limits").await, json!([]));
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
