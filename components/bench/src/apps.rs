//! apps (Marathon API) throughput, API latency and memory. Not written yet.

use anyhow::bail;
use tokio_util::sync::CancellationToken;

use crate::report::Section;

/// Child side: serves apps (`--serve apps:<arg>`).
pub async fn serve(_arg: &str, _token: CancellationToken) -> anyhow::Result<String> {
    bail!("the apps benchmark is not written yet")
}

pub async fn run(_quick: bool) -> anyhow::Result<Section> {
    bail!("the apps benchmark is not written yet")
}
