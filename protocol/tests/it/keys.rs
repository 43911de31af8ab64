//! Key-file text round trip and its errors.

use proofmesh_protocol::{KeyFileError, Keypair};

#[test]
fn key_file_round_trips_and_shows_the_public_key() {
    let kp = Keypair::generate();
    let text = kp.to_file_string();
    assert!(text.contains(&format!("# public: {}", kp.public())));
    let back = Keypair::from_file_string(&text).unwrap();
    assert_eq!(back.secret_bytes(), kp.secret_bytes());
    assert_eq!(back.public(), kp.public());
    // Comments are optional; 0x and surrounding whitespace are tolerated.
    let bare = format!("\n  0x{}  \n", hex_secret(&kp));
    assert_eq!(
        Keypair::from_file_string(&bare).unwrap().public(),
        kp.public()
    );
}

fn hex_secret(kp: &Keypair) -> String {
    kp.secret_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn key_file_errors() {
    let kp = Keypair::generate();
    assert_eq!(
        Keypair::from_file_string("# only a comment\n").unwrap_err(),
        KeyFileError::Missing
    );
    assert_eq!(
        Keypair::from_file_string("abcd\n").unwrap_err(),
        KeyFileError::Length { line: 1, chars: 4 }
    );
    assert_eq!(
        Keypair::from_file_string(&"zz".repeat(32)).unwrap_err(),
        KeyFileError::NotHex { line: 1 }
    );
    let two = format!("{}\n{}\n", hex_secret(&kp), hex_secret(&kp));
    assert_eq!(
        Keypair::from_file_string(&two).unwrap_err(),
        KeyFileError::ExtraLine { line: 2 }
    );
    let other = Keypair::generate();
    let swapped = format!("# public: {}\n{}\n", other.public(), hex_secret(&kp));
    assert!(matches!(
        Keypair::from_file_string(&swapped),
        Err(KeyFileError::PublicMismatch { .. })
    ));
    // Errors never echo the secret.
    let bad = format!("{}g\n", &hex_secret(&kp)[..63]);
    let msg = Keypair::from_file_string(&bad).unwrap_err().to_string();
    assert!(!msg.contains(&hex_secret(&kp)[..16]), "{msg}");
}
