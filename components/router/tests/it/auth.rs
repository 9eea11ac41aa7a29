//! §6.1: exactly the open set answers without a token; everything else is 401 with
//! `WWW-Authenticate: acsjwt`; a login token is accepted as `token=`, `Bearer` and cookie.

use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_open_set_answers_without_a_token() {
    let cluster = Cluster::start().await;
    let router = RouterHandle::start(cluster.config()).await.unwrap();
    let http = http();

    let resp = http
        .get(router.url("/dcos-metadata/dcos-version.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["version"], "1.11.0");
    assert!(v["dcos-image-commit"].is_string() && v["bootstrap-id"].is_string());

    let v: Value = http
        .get(router.url("/dcos-metadata/ui-config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["clusterConfiguration"]["id"], CLUSTER_ID);
    assert_eq!(v["clusterConfiguration"]["firstUser"], false);

    let resp = http.get(router.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/#/login");

    let resp = http
        .get(router.url("/exhibitor/exhibitor/v1/cluster/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v[0]["description"], "serving");
    assert_eq!(v[0]["isLeader"], true);

    let resp = http
        .get(router.url("/ca/dcos-ca.crt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-x509-ca-cert");
    assert_eq!(resp.text().await.unwrap(), cluster.ca.cert_pem);

    let resp = http
        .get(router.url("/cluster/v1/links"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let resp = http
        .get(router.url("/acs/api/v1/auth/providers"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = http.get(router.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Capstan"));

    for path in [
        "/metadata",
        "/pkgpanda/active.buildinfo.full.json",
        "/capabilities",
        "/mesos/master/state.json",
        "/mesos/state-summary",
        "/agent/agent-1/state.json",
        "/slave/agent-1/files/browse.json?path=/",
        "/mesos_dns/v1/hosts/master.mesos",
        "/marathon/v2/apps",
        "/service/marathon/v2/apps",
        "/service/web/",
        "/service/nope/",
        "/package/search",
        "/system/health/v1/nodes/127.0.0.1/units",
        "/acs/api/v1/users",
        "/exhibitor/exhibitor/v1/config/get-state",
    ] {
        let resp = http.get(router.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "acsjwt", "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["title"], "Unauthorized", "{path}");
        assert!(v["description"].is_string(), "{path}");

        let resp = http
            .get(router.url(path))
            .header("authorization", "token=not.a.jwt")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} with a forged token");
    }
    let resp = http
        .head(router.url("/pkgpanda/active.buildinfo.full.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "acsjwt");

    assert!(router.stop().await.is_requested());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_token_is_accepted_as_token_bearer_and_cookie() {
    let cluster = Cluster::start().await;
    let router = RouterHandle::start(cluster.config()).await.unwrap();
    let http = http();
    let token = login(&router).await.unwrap();

    let (status, v) = get_json(&router, "/metadata", &token).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["CLUSTER_ID"], CLUSTER_ID);
    assert_eq!(v["PUBLIC_IPV4"], "127.0.0.1");

    let resp = http
        .get(router.url("/metadata"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(router.url("/metadata"))
        .header("cookie", format!("dcos-acs-auth-cookie={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = http
        .head(router.url("/pkgpanda/active.buildinfo.full.json"))
        .header("authorization", format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-cache")
    );

    let resp = http
        .get(router.url("/capabilities"))
        .header("authorization", format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.dcos.capabilities+json;charset=utf-8;version=v1"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, serde_json::json!({"capabilities": []}));

    let (status, v) = get_json(&router, "/system/health/v1/nodes/127.0.0.1/units", &token)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(v["units"][0]["id"].is_string());

    let (status, v) = get_json(&router, "/acs/api/v1/users", &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");

    // The cookie becomes `Authorization: token=` upstream; DC/OS cookies never leave.
    let v: Value = http
        .get(router.url("/mesos/master/state.json"))
        .header(
            "cookie",
            format!("other=1; dcos-acs-auth-cookie={token}; dcos-acs-info-cookie=abc"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["server"], "master-a");
    assert_eq!(v["headers"]["authorization"], format!("token={token}"));
    assert_eq!(v["headers"]["cookie"], "other=1");
}
