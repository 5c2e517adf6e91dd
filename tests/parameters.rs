//! `/api/parameters` and `/api/global-parameters` as RabbitMQ 3.10
//! answers them: the `vhost-limits` component is the vhost's whole limit
//! set, other components are refused as RabbitMQ refuses one whose plugin
//! is off, global parameters hold any JSON (`cluster_name` renames the
//! cluster), and all of it survives a restart and travels in definitions.

mod common;

use std::time::Duration;

use common::{bounded, free_port, Broker};
use serde_json::{json, Value};

async fn api_broker(dir: std::path::PathBuf) -> Broker {
    Broker::start_in(dir, |c| {
        c.management_port = free_port();
        c.prometheus_port = free_port();
    })
    .await
}

#[tokio::test]
async fn vhost_limits_are_a_parameter_set_whole() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start_with(|c| c.management_port = free_port()).await;
        let path = "/parameters/vhost-limits/%2F/limits";
        let value = json!({"value": {"max-queues": 5, "max-connections": 3}});
        assert_eq!(b.api("PUT", path, Some(value)).await.0, 201);
        let (status, p) = b.api("GET", path, None).await;
        assert_eq!(status, 200);
        let want = json!({"value": {"max-connections": 3, "max-queues": 5},
                          "vhost": "/", "component": "vhost-limits", "name": "limits"});
        assert_eq!(p, want);
        assert_eq!(b.api("GET", "/parameters", None).await.1, json!([want]));
        assert_eq!(
            b.api("GET", "/parameters/vhost-limits/%2F", None).await.1,
            json!([want])
        );
        assert_eq!(b.api("GET", "/parameters/shovel", None).await.1, json!([]));
        // A PUT replaces the set: max-connections goes.
        let value = json!({"value": {"max-queues": 7}});
        assert_eq!(b.api("PUT", path, Some(value)).await.0, 204);
        let (_, limits) = b.api("GET", "/vhost-limits", None).await;
        assert_eq!(limits, json!([{"vhost": "/", "value": {"max-queues": 7}}]));
        assert_eq!(b.api("DELETE", path, None).await.0, 204);
        assert_eq!(b.api("GET", "/vhost-limits", None).await.1, json!([]));
        assert_eq!(b.api("GET", path, None).await.0, 404);
        assert_eq!(b.api("DELETE", path, None).await.0, 404);
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_parameters_get_rabbitmqs_refusals() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start_with(|c| c.management_port = free_port()).await;
        let put = |path: &'static str, body: Value| {
            let b = &b;
            async move { b.api("PUT", path, Some(body)).await }
        };
        let (status, e) = put(
            "/parameters/federation-upstream/%2F/s",
            json!({"value": {"uri": "amqp://remote"}}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            e["reason"],
            "Validation failed\n\ncomponent federation-upstream not found\n"
        );
        let (status, e) = put(
            "/parameters/vhost-limits/%2F/limits",
            json!({"value": {"bogus": 5}}),
        )
        .await;
        assert_eq!(status, 400);
        assert!(
            e["reason"].as_str().unwrap().contains("Unrecognised terms"),
            "{e}"
        );
        let (status, e) = put(
            "/parameters/vhost-limits/%2F/limits",
            json!({"value": {"max-queues": "x"}}),
        )
        .await;
        assert_eq!(status, 400);
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("max-queues should be a number"),
            "{e}"
        );
        let (status, _) = put("/parameters/vhost-limits/%2F/other", json!({"value": {}})).await;
        assert_eq!(
            status, 400,
            "RabbitMQ 3.10 answers 500 and stores it; Warren refuses"
        );
        let (status, _) = put(
            "/parameters/vhost-limits/nosuch/limits",
            json!({"value": {}}),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = put("/parameters/vhost-limits/%2F/limits", json!([1])).await;
        assert_eq!(status, 400);
        let (status, e) = put("/global-parameters/x", json!({"nothing": 1})).await;
        assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")));
        assert_eq!(b.api("GET", "/global-parameters/nope", None).await.0, 404);
        assert_eq!(
            b.api("DELETE", "/global-parameters/nope", None).await.0,
            404
        );
        // Parameters are for policymakers, as in RabbitMQ.
        let user = json!({"password": "mon", "tags": "monitoring"});
        assert_eq!(b.api("PUT", "/users/mon", Some(user)).await.0, 201);
        for path in ["/parameters", "/global-parameters"] {
            let (status, e) = b.api_as("mon", "GET", path, None).await;
            assert_eq!((status, e["error"].as_str()), (401, Some("not_authorised")));
        }
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn global_parameters_survive_a_restart_and_name_the_cluster() {
    bounded(Duration::from_secs(30), async {
        let dir = common::fresh_data_dir();
        let b = api_broker(dir.clone()).await;
        let (_, list) = b.api("GET", "/global-parameters", None).await;
        assert_eq!(list[0]["name"], "internal_cluster_id");
        let id = list[0]["value"].as_str().unwrap().to_string();
        assert!(id.starts_with("rabbitmq-cluster-id-"), "{id}");
        let body = json!({"value": {"a": [1, 2]}});
        assert_eq!(
            b.api("PUT", "/global-parameters/mine", Some(body)).await.0,
            201
        );
        let body = json!({"value": "east"});
        assert_eq!(
            b.api("PUT", "/global-parameters/cluster_name", Some(body))
                .await
                .0,
            201
        );
        assert_eq!(
            b.api("GET", "/overview", None).await.1["cluster_name"],
            "east"
        );
        let body = json!({"name": "west"});
        assert_eq!(b.api("PUT", "/cluster-name", Some(body)).await.0, 204);
        b.stop().await;

        let b = api_broker(dir.clone()).await;
        assert_eq!(
            b.api("GET", "/cluster-name", None).await.1,
            json!({"name": "west"})
        );
        let (_, mine) = b.api("GET", "/global-parameters/mine", None).await;
        assert_eq!(mine, json!({"name": "mine", "value": {"a": [1, 2]}}));
        let (_, kept) = b
            .api("GET", "/global-parameters/internal_cluster_id", None)
            .await;
        assert_eq!(kept["value"], id.as_str(), "the id is made once");
        let metrics = format!("http://{}/metrics", b.prometheus_addr().unwrap());
        let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
        let identity = format!("rabbitmq_cluster=\"west\",rabbitmq_cluster_permanent_id=\"{id}\"");
        assert!(text.contains(&identity), "{text}");
        assert_eq!(
            b.api("DELETE", "/global-parameters/cluster_name", None)
                .await
                .0,
            204
        );
        let (_, overview) = b.api("GET", "/overview", None).await;
        assert_eq!(overview["cluster_name"], overview["node"]);
        b.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn definitions_carry_parameters_limits_and_policies() {
    bounded(Duration::from_secs(30), async {
        let from = Broker::start_with(|c| c.management_port = free_port()).await;
        let limits = json!({"value": {"max-queues": 9}});
        from.api("PUT", "/parameters/vhost-limits/%2F/limits", Some(limits))
            .await;
        from.api("PUT", "/global-parameters/mine", Some(json!({"value": 1})))
            .await;
        let policy = json!({"pattern": "^q", "definition": {"max-length": 3}});
        from.api("PUT", "/policies/%2F/cap", Some(policy)).await;
        let (_, defs) = from.api("GET", "/definitions", None).await;
        let (_, vhost_defs) = from.api("GET", "/definitions/%2F", None).await;
        assert_eq!(vhost_defs["limits"], json!({"max-queues": 9}));
        assert_eq!(vhost_defs["policies"][0]["name"], "cap");
        assert_eq!(vhost_defs["parameters"][0]["component"], "vhost-limits");

        let to = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_, own) = to
            .api("GET", "/global-parameters/internal_cluster_id", None)
            .await;
        assert_eq!(
            to.api("POST", "/definitions", Some(defs.clone())).await.0,
            204
        );
        let (_, params) = to.api("GET", "/parameters", None).await;
        assert_eq!(params, defs["parameters"]);
        assert_eq!(
            to.api("GET", "/global-parameters/mine", None).await.1["value"],
            1
        );
        let (_, kept) = to
            .api("GET", "/global-parameters/internal_cluster_id", None)
            .await;
        assert_eq!(kept, own, "an import keeps the node's own cluster id");

        let third = Broker::start_with(|c| c.management_port = free_port()).await;
        let (status, _) = third
            .api("POST", "/definitions/%2F", Some(vhost_defs))
            .await;
        assert_eq!(status, 204);
        let (_, limits) = third.api("GET", "/vhost-limits/%2F", None).await;
        assert_eq!(limits, json!([{"vhost": "/", "value": {"max-queues": 9}}]));
        assert_eq!(third.api("GET", "/policies/%2F/cap", None).await.0, 200);
        for b in [from, to, third] {
            b.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn imports_skip_unknown_components_and_refuse_malformed_items() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start_with(|c| c.management_port = free_port()).await;
        // A RabbitMQ export with a federation upstream: it is skipped, the
        // rest lands.
        let defs = json!({"parameters": [
            {"component": "federation-upstream", "vhost": "/", "name": "s", "value": {"uri": "amqp://remote"}},
            {"component": "vhost-limits", "vhost": "/", "name": "limits", "value": {"max-queues": 4}},
        ]});
        assert_eq!(b.api("POST", "/definitions", Some(defs)).await.0, 204);
        let (_, limits) = b.api("GET", "/vhost-limits/%2F", None).await;
        assert_eq!(limits, json!([{"vhost": "/", "value": {"max-queues": 4}}]));
        // A list item that is not an object is a 400, never a 500.
        for key in ["policies", "parameters"] {
            let (status, e) = b.api("POST", "/definitions/%2F", Some(json!({key: [1]}))).await;
            assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")), "{key}: {e}");
        }
        // Global parameter values are bounded.
        let huge = json!({"value": "x".repeat(2 << 20)});
        let (status, _) = b.api("PUT", "/global-parameters/huge", Some(huge)).await;
        assert_eq!(status, 400);
        b.stop().await;
    })
    .await;
}
