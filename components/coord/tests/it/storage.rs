//! openraft's storage conformance suite against the redb store.

use capstan_coord::raft::{NodeId, TypeConfig};
use capstan_coord::store::{LogStore, StateMachineStore, open_db};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_db(dir.path()).expect("open db");
        let sm = StateMachineStore::open(db.clone(), 100)?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn redb_store_passes_openraft_storage_conformance_suite() {
    Suite::test_all(Builder).expect("storage suite");
}
