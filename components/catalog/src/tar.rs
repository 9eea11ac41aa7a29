//! Bundles' use of the `tar` crate: regular files written one after the other (each of exactly
//! the size its header says, streamed from a reader), indexed back by offset so a reader can
//! stream each entry from the file without unpacking the archive, and the check that an
//! upload starts like a tar archive. `docker save` archives go in as opaque files.

use std::io::{self, Read, Seek, SeekFrom, Write};

use ::tar::{Archive, Builder, EntryType, Header};

/// Why an archive could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("entry name {0:?} cannot be stored in a ustar header")]
    BadName(String, #[source] Option<io::Error>),
    #[error("the archive ends inside entry {0:?}")]
    Truncated(String),
    #[error("reading the archive")]
    Read(#[source] io::Error),
    #[error("writing the archive")]
    Write(#[source] io::Error),
}

/// One file of an archive: where its data starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// The ustar header of a regular file (mode 0644, owner 0, mtime 0). Sizes of 8 GiB and more
/// take the GNU binary size field, which the crate (and GNU tar, Go, docker) read back.
pub fn header(name: &str, size: u64) -> Result<Header, TarError> {
    let mut h = Header::new_ustar();
    if name.is_empty() || name.contains('\0') {
        return Err(TarError::BadName(name.to_owned(), None));
    }
    h.set_path(name)
        .map_err(|e| TarError::BadName(name.to_owned(), Some(e)))?;
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_cksum();
    Ok(h)
}

/// `data`, cut at `left` bytes, remembering whether it ended early.
struct Exact<R> {
    data: R,
    left: u64,
    short: bool,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.data.read(&mut buf[..want])?;
        if n == 0 {
            // The header already promised `left` more bytes: stop the copy with an error.
            self.short = true;
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Appends one file of exactly `size` bytes streamed from `data` (the crate copies whatever
/// the reader gives; this refuses a reader that ends early, which would corrupt the archive).
/// End the archive with `Builder::into_inner` (or `finish`), which writes the end blocks.
pub fn append<W: Write>(
    out: &mut Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), TarError> {
    let h = header(name, size)?;
    let mut exact = Exact {
        data,
        left: size,
        short: false,
    };
    match out.append(&h, &mut exact) {
        Ok(()) => Ok(()),
        Err(_) if exact.short => Err(TarError::Truncated(name.to_owned())),
        Err(e) => Err(TarError::Write(e)),
    }
}

/// Every regular file of the archive, in order (other entry types are skipped; long names
/// and pax headers are resolved by the crate). Seeks over the data instead of reading it.
pub fn index<R: Read + Seek>(r: &mut R) -> Result<Vec<Entry>, TarError> {
    let end = r.seek(SeekFrom::End(0)).map_err(TarError::Read)?;
    r.seek(SeekFrom::Start(0)).map_err(TarError::Read)?;
    let mut archive = Archive::new(r);
    let mut out = Vec::new();
    // An archive without its end blocks still lists what it holds.
    for entry in archive.entries_with_seek().map_err(TarError::Read)? {
        let entry = entry.map_err(TarError::Read)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let offset = entry.raw_file_position();
        let size = entry.size();
        if offset.checked_add(size).is_none_or(|e| e > end) {
            return Err(TarError::Truncated(name));
        }
        if entry.header().entry_type().is_file() {
            out.push(Entry { name, offset, size });
        }
    }
    Ok(out)
}

/// True when `block` starts a tar archive: a ustar or GNU header with a good checksum.
pub fn looks_like_tar(block: &[u8]) -> bool {
    let Some(bytes) = block.get(..512) else {
        return false;
    };
    let mut h = Header::new_old();
    h.as_mut_bytes().copy_from_slice(bytes);
    if h.as_ustar().is_none() && h.as_gnu().is_none() {
        return false;
    }
    let Ok(stored) = h.cksum() else {
        return false;
    };
    h.set_cksum();
    h.cksum().is_ok_and(|sum| sum == stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn archive(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = Builder::new(Vec::new());
        for (name, data) in files {
            append(&mut out, name, data.len() as u64, data.as_slice()).unwrap();
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn headers_are_ustar_with_a_valid_checksum() {
        let h = header("repository.json", 1234).unwrap();
        assert!(looks_like_tar(h.as_bytes()));
        assert_eq!(h.path_bytes().as_ref(), b"repository.json");
        assert_eq!(h.size().unwrap(), 1234);
        assert_eq!(h.entry_type(), EntryType::Regular);
        let mut bad = *h.as_bytes();
        bad[0] = b'X';
        assert!(!looks_like_tar(&bad));
        let mut no_magic = h.clone();
        no_magic.as_mut_bytes()[257..265].copy_from_slice(&[0; 8]);
        no_magic.set_cksum();
        assert!(!looks_like_tar(no_magic.as_bytes()));
        assert!(!looks_like_tar(&[0u8; 100]));
        assert!(!looks_like_tar(&[0u8; 512]));
        assert!(!looks_like_tar(b"{\"packages\": []}"));
        assert!(!looks_like_tar(&[b'x'; 1024]));
        let gnu = {
            let mut g = Header::new_gnu();
            g.set_path("a").unwrap();
            g.set_cksum();
            g
        };
        assert!(looks_like_tar(gnu.as_bytes()));
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "a\0b", &"x/".repeat(200), "../x", "/etc/passwd"] {
            assert!(
                matches!(header(name, 0), Err(TarError::BadName(..))),
                "{name}"
            );
        }
        assert!(header(&"x".repeat(100), 0).is_ok());
        assert!(header("images/0.tar", 0).is_ok());
    }

    #[test]
    fn a_reader_shorter_than_its_size_is_refused() {
        let mut out = Builder::new(Vec::new());
        let err = append(&mut out, "a", 10, &[1u8; 4][..]).unwrap_err();
        assert!(matches!(err, TarError::Truncated(n) if n == "a"));
        // A longer one is cut at the size.
        let mut out = Builder::new(Vec::new());
        append(&mut out, "b", 3, &[2u8; 600][..]).unwrap();
        let a = out.into_inner().unwrap();
        let entries = index(&mut Cursor::new(a)).unwrap();
        assert_eq!(
            entries,
            [Entry {
                name: "b".into(),
                offset: 512,
                size: 3
            }]
        );
    }

    #[test]
    fn a_truncated_archive_names_the_entry() {
        let mut a = archive(&[("a", vec![1; 1000])]);
        a.truncate(700);
        let err = index(&mut Cursor::new(a)).unwrap_err();
        assert!(matches!(err, TarError::Truncated(n) if n == "a"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let text = b"not a tar at all, just some text that is long enough".repeat(20);
        assert!(matches!(
            index(&mut Cursor::new(text)),
            Err(TarError::Read(_))
        ));
        // Too short for a header block.
        assert!(index(&mut Cursor::new(vec![b'x'; 100])).is_err());
        // A header whose size field is garbage.
        let mut a = archive(&[("a", vec![1; 10])]);
        a[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
        let mut h = Header::new_old();
        h.as_mut_bytes().copy_from_slice(&a[..512]);
        h.set_cksum();
        a[..512].copy_from_slice(h.as_bytes());
        assert!(index(&mut Cursor::new(a)).is_err());
        // Empty input and an end-of-archive block only: no entries.
        assert_eq!(index(&mut Cursor::new(Vec::new())).unwrap(), []);
        assert_eq!(index(&mut Cursor::new(vec![0u8; 1024])).unwrap(), []);
    }

    #[test]
    fn other_entry_types_are_skipped() {
        let mut out = Builder::new(Vec::new());
        let mut dir = Header::new_ustar();
        dir.set_path("images/").unwrap();
        dir.set_entry_type(EntryType::Directory);
        dir.set_size(0);
        dir.set_cksum();
        out.append(&dir, io::empty()).unwrap();
        append(&mut out, "images/0.tar", 5, &b"hello"[..]).unwrap();
        let a = out.into_inner().unwrap();
        let entries = index(&mut Cursor::new(a.clone())).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "images/0.tar");
        let at = usize::try_from(entries[0].offset).unwrap();
        assert_eq!(&a[at..at + 5], b"hello");
    }

    proptest! {
        #[test]
        fn written_files_index_back_to_their_bytes(
            files in proptest::collection::vec(("([a-z]{1,120}/)?[a-z]{1,90}", proptest::collection::vec(any::<u8>(), 0..2000)), 0..5)
        ) {
            let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
            let a = archive(&files);
            prop_assert_eq!(a.len() % 512, 0);
            prop_assert!(looks_like_tar(&a) || files.is_empty());
            let entries = index(&mut Cursor::new(a.clone())).unwrap();
            prop_assert_eq!(entries.len(), files.len());
            for (e, (name, data)) in entries.iter().zip(&files) {
                prop_assert_eq!(&e.name, name);
                prop_assert_eq!(e.size, data.len() as u64);
                let start = usize::try_from(e.offset).unwrap();
                prop_assert_eq!(&a[start..start + data.len()], data.as_slice());
            }
        }
    }
}
