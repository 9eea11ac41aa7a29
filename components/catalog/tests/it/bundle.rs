//! Bundles against a running catalog: `bundle::import` uploads the images to the image store
//! and the packages to the local repository; the images come back byte for byte from
//! `GET /package/images/<name>`, the packages are searchable; bad uploads are 4xx.

use std::fs::File;

use capstan_catalog::bundle::{self, Bundle};
use capstan_catalog::universe::Repository;
use serde_json::{Value, json};

use super::support::{Cluster, ERROR, MAX_IMAGE_BYTES};

/// A small stand-in for a `docker save` archive: a tar holding `manifest.json`.
fn fake_image(len: usize) -> Vec<u8> {
    let data = vec![b'x'; len];
    let mut out = tar::Builder::new(Vec::new());
    capstan_catalog::tar::append(&mut out, "manifest.json", len as u64, data.as_slice()).unwrap();
    out.into_inner().unwrap()
}

fn repo_on(image: &str) -> Repository {
    let mut p = capstan_catalog::builtin::repository()
        .packages
        .iter()
        .find(|p| p.name == "hello-world")
        .cloned()
        .unwrap();
    p.name = "imported-hello".into();
    p.resource = Some(json!({"assets": {"container": {"docker": {"http": image}}}}));
    Repository { packages: vec![p] }
}

async fn error_of(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_imported_bundle_serves_its_images_and_installs_from_the_local_repository() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let image = fake_image(5000);
    let saved = dir.path().join("saved.tar");
    std::fs::write(&saved, &image).unwrap();
    let path = dir.path().join("bundle.tar");
    let mut out = File::create(&path).unwrap();
    bundle::write(
        &mut out,
        &repo_on("test/app:1"),
        &[("test/app:1".into(), saved)],
    )
    .unwrap();
    drop(out);
    let b = Bundle::open(&path).unwrap();

    let done = bundle::import(&bundle::http_client(), &c.url, None, &b)
        .await
        .unwrap();
    assert_eq!(done.images, ["test/app:1"]);
    assert_eq!(done.repository["uri"], "capstan:local");
    assert_eq!(done.repository["packages"][0]["name"], "imported-hello");

    let got = c
        .http
        .get(format!("{}/package/images/test/app:1", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/x-tar");
    assert_eq!(got.bytes().await.unwrap().as_ref(), image.as_slice());
    let list: Value = c
        .http
        .get(format!("{}/package/images", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!({"images": [{"name": "test/app:1", "size": image.len()}]})
    );

    // The local repository is listed first, and its package renders and installs.
    let repos = c.call("repository/list", "v1", json!({})).await;
    assert_eq!(
        repos.body["repositories"][0],
        json!({"name": "local", "uri": "capstan:local"})
    );
    let found = c
        .call("search", "v1", json!({"query": "imported-hello"}))
        .await;
    assert_eq!(
        found.body["packages"][0]["name"], "imported-hello",
        "{:#}",
        found.body
    );
    let installed = c
        .call("install", "v2", json!({"packageName": "imported-hello"}))
        .await;
    assert_eq!(installed.status, 200, "{:#}", installed.body);
    let apps = c.marathon_apps().await;
    assert_eq!(apps[0]["container"]["docker"]["image"], "test/app:1");
    assert_eq!(apps[0]["labels"]["DCOS_PACKAGE_SOURCE"], "capstan:local");

    // Importing again is idempotent: one listing, one package version.
    bundle::import(&bundle::http_client(), &c.url, None, &b)
        .await
        .unwrap();
    let repos = c.call("repository/list", "v1", json!({})).await;
    let locals = repos.body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["uri"] == "capstan:local")
        .count();
    assert_eq!(locals, 1);
    c.stop().await;
}

#[tokio::test]
async fn bad_image_uploads_and_lookups_are_client_errors() {
    let c = Cluster::start().await;
    let put = |name: &str, body: Vec<u8>| {
        c.http
            .put(format!("{}/package/images/{name}", c.url))
            .body(body)
            .send()
    };
    let (status, ct, body) = error_of(put("Bad Name", fake_image(10)).await.unwrap()).await;
    assert_eq!((status, ct.as_str()), (400, ERROR), "{body}");
    let (status, _, body) = error_of(put("a%2F..%2F..%2Fetc", fake_image(10)).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = error_of(put("a/b:1", b"{}".repeat(600)).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not a tar"),
        "{body}"
    );
    let big = fake_image(usize::try_from(MAX_IMAGE_BYTES).unwrap());
    let (status, _, body) = error_of(put("a/b:1", big).await.unwrap()).await;
    assert_eq!(status, 413, "{body}");

    // Nothing half-written was kept.
    let missing = c
        .http
        .get(format!("{}/package/images/a/b:1", c.url))
        .send()
        .await
        .unwrap();
    let (status, ct, body) = error_of(missing).await;
    assert_eq!((status, ct.as_str()), (404, ERROR));
    assert_eq!(body["type"], "ImageNotFound");
    let list: Value = c
        .http
        .get(format!("{}/package/images", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({"images": []}));

    let bad_repo = c
        .http
        .post(format!("{}/package/local-repository", c.url))
        .body(r#"{"packages": [{"name": 1}]}"#)
        .send()
        .await
        .unwrap();
    let (status, _, body) = error_of(bad_repo).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "RepositoryInvalid");
    c.stop().await;
}
