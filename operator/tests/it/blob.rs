//! The file blob store verifies hashes on the way in and out.

use proofmesh_operator::{BlobError, BlobStore, FsBlobStore, MemBlobStore};
use proofmesh_protocol::ContentId;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn fs_store_round_trip_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path()).unwrap();
    let id = store.put(b"proof bytes").unwrap();
    assert_eq!(id, ContentId::of_bytes(b"proof bytes"));
    assert_eq!(store.put(b"proof bytes").unwrap(), id);
    assert!(store.contains(&id).unwrap());
    assert_eq!(store.get(&id).unwrap(), b"proof bytes");
    assert!(store
        .path_of(&id)
        .ends_with(format!("{}/{}", &id.to_hex()[..2], id.to_hex())));
    let missing = ContentId::of_bytes(b"nope");
    assert!(matches!(store.get(&missing), Err(BlobError::NotFound(m)) if m == missing));
}

#[test]
fn fs_store_refuses_corruption_on_read_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().join("s")).unwrap();
    let id = store.put(b"original").unwrap();
    std::fs::write(store.path_of(&id), b"flipped!").unwrap();
    let err = store.get(&id).unwrap_err();
    assert!(
        matches!(err, BlobError::Corrupt { expected, actual } if expected == id && actual == ContentId::of_bytes(b"flipped!"))
    );
    assert!(err.to_string().contains(&id.to_hex()));
    let dest = dir.path().join("out");
    assert!(matches!(
        store.materialize(&id, &dest),
        Err(BlobError::Corrupt { .. })
    ));
    assert!(!dest.exists(), "corrupt copy removed");
    let claimed = ContentId::of_bytes(b"something else");
    assert!(matches!(
        store.put_expected(&claimed, b"payload"),
        Err(BlobError::Corrupt { .. })
    ));
    assert!(!store.contains(&claimed).unwrap());
    store
        .put_expected(&ContentId::of_bytes(b"payload"), b"payload")
        .unwrap();
}

#[test]
fn put_file_moves_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().join("s")).unwrap();
    let file = dir.path().join("output");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &big).unwrap();
    let (id, size) = store.put_file(&file).unwrap();
    assert_eq!((id, size), (ContentId::of_bytes(&big), big.len() as u64));
    assert_eq!(store.get(&id).unwrap(), big);
    let dest = dir.path().join("copy");
    assert_eq!(store.materialize(&id, &dest).unwrap(), big.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), big);
}

#[test]
fn mem_store_detects_corruption() {
    let store = MemBlobStore::new();
    let id = store.put(b"x").unwrap();
    assert_eq!(store.get(&id).unwrap(), b"x");
    store.insert_unchecked(id, b"y".to_vec());
    assert!(matches!(store.get(&id), Err(BlobError::Corrupt { .. })));
}

#[test]
fn linked_input_is_the_blob_read_only_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().join("s"))
        .unwrap()
        .with_link_inputs(true);
    let id = store.put(b"input bytes").unwrap();
    let dest = dir.path().join("000");
    assert_eq!(store.materialize(&id, &dest).unwrap(), 11);
    let (blob, linked) = (
        std::fs::metadata(store.path_of(&id)).unwrap(),
        std::fs::metadata(&dest).unwrap(),
    );
    assert_eq!(linked.ino(), blob.ino(), "a hard link, not a copy");
    assert_eq!(linked.permissions().mode() & 0o222, 0, "read-only");
    assert_eq!(std::fs::read(&dest).unwrap(), b"input bytes");
    if linked.uid() != 0 && std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&dest)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    }
    // A blob changed behind the store's back is caught through the link, and the link removed.
    let path = store.path_of(&id);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, b"tampered!!!").unwrap();
    let dest2 = dir.path().join("001");
    assert!(matches!(
        store.materialize(&id, &dest2),
        Err(BlobError::Corrupt { .. })
    ));
    assert!(!dest2.exists());
}

#[test]
fn copied_input_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().join("s"))
        .unwrap()
        .with_link_inputs(false);
    assert!(!store.links_inputs());
    let id = store.put(b"input bytes").unwrap();
    let dest = dir.path().join("000");
    store.materialize(&id, &dest).unwrap();
    assert_ne!(
        std::fs::metadata(&dest).unwrap().ino(),
        std::fs::metadata(store.path_of(&id)).unwrap().ino()
    );
    std::fs::write(&dest, b"scribbled").unwrap();
    assert_eq!(store.get(&id).unwrap(), b"input bytes");
}

#[test]
fn put_file_moves_a_private_output_and_copies_a_shared_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().join("s")).unwrap();
    let out = dir.path().join("output");
    std::fs::write(&out, b"private").unwrap();
    let ino = std::fs::metadata(&out).unwrap().ino();
    let (id, _) = store.put_file(&out).unwrap();
    assert!(!out.exists(), "moved, not copied");
    assert_eq!(std::fs::metadata(store.path_of(&id)).unwrap().ino(), ino);

    // An output with another name outside the store must not become the blob's inode: a write
    // through that name would corrupt the blob.
    let out = dir.path().join("output2");
    let other = dir.path().join("elsewhere");
    std::fs::write(&out, b"shared").unwrap();
    std::fs::hard_link(&out, &other).unwrap();
    let (id, _) = store.put_file(&out).unwrap();
    std::fs::write(&other, b"changed").unwrap();
    assert_eq!(store.get(&id).unwrap(), b"shared");
}
