//! Container records and the framework id in coord: `<prefix>/containers/<id>` (a
//! [`Container`] as JSON, versioned), `<prefix>/networks/<id>` (a user network) and
//! `<prefix>/framework_id`. Without coord endpoints
//! the store keeps nothing (tests of the HTTP layer only).

use capstan_coord_client::Client;

use crate::model::Container;
use crate::networks::NetworkRecord;
use crate::volumes::VolumeRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("coord refused or failed the request")]
    Coord(#[from] capstan_coord_client::ClientError),
    #[error("the record at {key} is not a container record")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Clone)]
pub struct Store {
    coord: Option<Client>,
    prefix: String,
}

impl Store {
    pub fn new(coord: Option<Client>, prefix: &str) -> Store {
        Store {
            coord,
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    fn container_key(&self, id: &str) -> String {
        format!("{}/containers/{id}", self.prefix)
    }

    fn framework_key(&self) -> String {
        format!("{}/framework_id", self.prefix)
    }

    pub fn coord(&self) -> Option<&Client> {
        self.coord.as_ref()
    }

    /// Every stored container.
    pub async fn load(&self) -> Result<Vec<Container>, StoreError> {
        self.load_all("containers").await
    }

    /// Every record stored under `<prefix>/<kind>/`, decoded.
    async fn load_all<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<T>, StoreError> {
        let Some(coord) = &self.coord else {
            return Ok(Vec::new());
        };
        let list = coord.list_all(&format!("{}/{kind}/", self.prefix)).await?;
        list.kvs
            .into_iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value).map_err(|source| StoreError::Decode {
                    key: kv.key.clone(),
                    source,
                })
            })
            .collect()
    }

    pub async fn put(&self, c: &Container) -> Result<(), StoreError> {
        if let Some(coord) = &self.coord {
            let value = serde_json::to_vec(c).unwrap_or_default();
            coord.put(&self.container_key(&c.id), value).await?;
        }
        Ok(())
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        if let Some(coord) = &self.coord {
            coord.delete(&self.container_key(id)).await?;
        }
        Ok(())
    }

    fn network_key(&self, id: &str) -> String {
        format!("{}/networks/{id}", self.prefix)
    }

    /// Every stored user network.
    pub async fn load_networks(&self) -> Result<Vec<NetworkRecord>, StoreError> {
        self.load_all("networks").await
    }

    pub async fn put_network(&self, n: &NetworkRecord) -> Result<(), StoreError> {
        if let Some(coord) = &self.coord {
            let value = serde_json::to_vec(n).unwrap_or_default();
            coord.put(&self.network_key(&n.id), value).await?;
        }
        Ok(())
    }

    pub async fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        if let Some(coord) = &self.coord {
            coord.delete(&self.network_key(id)).await?;
        }
        Ok(())
    }

    fn volume_key(&self, name: &str) -> String {
        format!("{}/volumes/{name}", self.prefix)
    }

    /// Every stored named volume.
    pub async fn load_volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        self.load_all("volumes").await
    }

    pub async fn put_volume(&self, v: &VolumeRecord) -> Result<(), StoreError> {
        if let Some(coord) = &self.coord {
            let value = serde_json::to_vec(v).unwrap_or_default();
            coord.put(&self.volume_key(&v.name), value).await?;
        }
        Ok(())
    }

    pub async fn delete_volume(&self, name: &str) -> Result<(), StoreError> {
        if let Some(coord) = &self.coord {
            coord.delete(&self.volume_key(name)).await?;
        }
        Ok(())
    }

    pub async fn framework_id(&self) -> Result<Option<String>, StoreError> {
        let Some(coord) = &self.coord else {
            return Ok(None);
        };
        Ok(coord
            .get(&self.framework_key())
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .filter(|s| !s.is_empty()))
    }

    pub async fn set_framework_id(&self, id: &str) -> Result<(), StoreError> {
        if let Some(coord) = &self.coord {
            coord
                .put(&self.framework_key(), id.as_bytes().to_vec())
                .await?;
        }
        Ok(())
    }
}
