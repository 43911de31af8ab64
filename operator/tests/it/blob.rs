//! The file blob store verifies hashes on the way in and out.

use proofmesh_operator::{BlobError, BlobStore, FsBlobStore, MemBlobStore};
use proofmesh_protocol::ContentId;

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
