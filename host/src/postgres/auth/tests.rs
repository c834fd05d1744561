use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;

/// Few iterations keep debug-build tests fast where the count is irrelevant.
fn cheap_secret(password: &[u8]) -> ScramSecret {
    ScramSecret::from_password(password, b"0123456789abcdef", 16).unwrap()
}

/// Runs postgres-protocol's client against our server; returns the server's
/// verdict and whether the client accepted the server's signature.
fn pg_client_exchange(
    server: &mut ScramServer,
    password: &[u8],
    binding: ChannelBinding,
) -> Result<bool, AuthError> {
    let mut client = ScramSha256::new(password, binding);
    let server_first = server.client_first(SCRAM_SHA_256, client.message())?;
    client.update(&server_first).unwrap();
    let server_final = server.client_final(client.message())?;
    Ok(client.finish(&server_final).is_ok())
}

#[test]
fn pg_client_right_password() {
    let mut server = ScramServer::new(ScramSecret::generate(b"s3cret").unwrap());
    assert_eq!(
        pg_client_exchange(&mut server, b"s3cret", ChannelBinding::unsupported()),
        Ok(true)
    );
}

#[test]
fn pg_client_that_supports_channel_binding_is_accepted() {
    let mut server = ScramServer::new(cheap_secret(b"s3cret"));
    assert_eq!(
        pg_client_exchange(&mut server, b"s3cret", ChannelBinding::unrequested()),
        Ok(true)
    );
}

#[test]
fn pg_client_wrong_password() {
    let mut server = ScramServer::new(cheap_secret(b"s3cret"));
    assert_eq!(
        pg_client_exchange(&mut server, b"guess", ChannelBinding::unsupported()),
        Err(AuthError::WrongPassword)
    );
    // The exchange is over after a failure.
    assert!(matches!(
        server.client_final(b"c=biws,r=x,p=AAAA"),
        Err(AuthError::OutOfOrder(_))
    ));
}

#[test]
fn verifier_from_postgres_protocol_hash() {
    let hash = postgres_protocol::password::scram_sha_256(b"hunter2");
    let Verifier::Scram(secret) = Verifier::parse_hash(&hash).unwrap() else {
        panic!("not parsed as SCRAM");
    };
    assert_eq!(secret.iterations(), DEFAULT_SCRAM_ITERATIONS);
    assert_eq!(secret.to_hash_string(), hash);
    let mut server = ScramServer::new(secret.clone());
    assert_eq!(
        pg_client_exchange(&mut server, b"hunter2", ChannelBinding::unsupported()),
        Ok(true)
    );
    let mut server = ScramServer::new(secret);
    assert_eq!(
        pg_client_exchange(&mut server, b"hunter3", ChannelBinding::unsupported()),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn our_derivation_matches_postgres_protocol() {
    let hash = postgres_protocol::password::scram_sha_256(b"pw");
    let Verifier::Scram(theirs) = Verifier::parse_hash(&hash).unwrap() else {
        panic!("not parsed as SCRAM");
    };
    let ours = ScramSecret::from_password(b"pw", theirs.salt(), theirs.iterations()).unwrap();
    assert_eq!(ours.stored_key(), theirs.stored_key());
    assert_eq!(ours.server_key(), theirs.server_key());
}

#[test]
fn scram_client_against_scram_server() {
    let secret = cheap_secret(b"pa$$word");
    let mut server = ScramServer::new(secret.clone());
    let mut client = ScramClient::new(b"pa$$word");
    let server_first = server
        .client_first(ScramClient::mechanism(), client.client_first())
        .unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    let server_final = server.client_final(&client_final).unwrap();
    client.server_final(&server_final).unwrap();
    assert!(matches!(
        client.server_final(&server_final),
        Err(AuthError::OutOfOrder(_))
    ));

    let mut server = ScramServer::new(secret);
    let mut client = ScramClient::new(b"wrong");
    let server_first = server
        .client_first(ScramClient::mechanism(), client.client_first())
        .unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    assert_eq!(
        server.client_final(&client_final),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn scram_client_rejects_forged_server_signature() {
    let mut server = ScramServer::new(cheap_secret(b"pw"));
    let mut client = ScramClient::new(b"pw");
    let server_first = server
        .client_first(SCRAM_SHA_256, client.client_first())
        .unwrap();
    client.server_first(&server_first).unwrap();
    let forged = format!("v={}", STANDARD.encode([7u8; 32]));
    assert!(matches!(
        client.server_final(forged.as_bytes()),
        Err(AuthError::Server(_))
    ));
}

#[test]
fn choose_mechanism_only_plain_scram() {
    assert_eq!(
        choose_mechanism(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
        Some(SCRAM_SHA_256)
    );
    assert_eq!(choose_mechanism(&["SCRAM-SHA-256-PLUS"]), None);
    assert_eq!(choose_mechanism(&[]), None);
}

#[test]
fn rfc7677_test_vector() {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let secret = ScramSecret::from_password(b"pencil", &salt, 4096).unwrap();
    let mut server = ScramServer::with_nonce(secret, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned());
    let server_first = server
        .client_first(SCRAM_SHA_256, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(
        server_first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let server_final = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn channel_binding_and_mechanism_errors() {
    let secret = cheap_secret(b"pw");
    let first = |mechanism: &str, data: &[u8]| {
        ScramServer::new(secret.clone()).client_first(mechanism, data)
    };
    assert_eq!(
        first("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc"),
        Err(AuthError::ChannelBindingNotSupported)
    );
    assert_eq!(
        first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc"),
        Err(AuthError::ChannelBindingNotSupported)
    );
    assert_eq!(
        first("SCRAM-SHA-1", b"n,,n=,r=abc"),
        Err(AuthError::UnsupportedMechanism("SCRAM-SHA-1".into()))
    );
    assert!(matches!(
        first(SCRAM_SHA_256, b"n,a=bob,n=,r=abc"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        first(SCRAM_SHA_256, b"n,,m=x,n=,r=abc"),
        Err(AuthError::Malformed(_))
    ));
    // The user name is ignored and extensions are skipped.
    assert!(first(SCRAM_SHA_256, b"n,,n=someone,r=abc,x=ext").is_ok());
}

#[test]
fn channel_binding_echo_must_match_flag() {
    let mut server = ScramServer::with_nonce(cheap_secret(b"pw"), "S".into());
    server.client_first(SCRAM_SHA_256, b"y,,n=,r=C").unwrap();
    let proof = STANDARD.encode([0u8; 32]);
    let result = server.client_final(format!("c=biws,r=CS,p={proof}").as_bytes());
    assert_eq!(
        result,
        Err(AuthError::Malformed(
            "SCRAM channel binding check failed".into()
        ))
    );
}

#[test]
fn parse_hash_md5_and_errors() {
    let hash = postgres_protocol::password::md5(b"pw", "alice");
    let Verifier::Md5(hex) = Verifier::parse_hash(&hash).unwrap() else {
        panic!("not parsed as md5");
    };
    assert_eq!(&hex[..], &hash.as_bytes()[3..]);
    assert_eq!(
        Verifier::parse_hash(&hash.to_uppercase().replacen("MD5", "md5", 1))
            .map(|v| matches!(v, Verifier::Md5(h) if h == hex)),
        Ok(true)
    );
    for bad in [
        "",
        "plaintext",
        "md5abc",
        "md5zz2af4dd09bbb41884907a838a3233294",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:c2FsdA==$",
        "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:!!$AAAA:AAAA",
    ] {
        assert!(
            matches!(
                Verifier::parse_hash(bad),
                Err(AuthError::InvalidVerifier(_))
            ),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn md5_with_plain_and_hashed_verifiers() {
    let salt = md5_salt();
    let response = md5_password("alice", "pw", salt);
    let plain = Verifier::Plain("pw".into());
    let hashed = Verifier::parse_hash(&postgres_protocol::password::md5(b"pw", "alice")).unwrap();
    assert!(md5_verify(&plain, "alice", salt, &response));
    assert!(md5_verify(&hashed, "alice", salt, &response));
    // A stored MD5 hash is already salted with its own user name.
    let bobs = Verifier::parse_hash(&postgres_protocol::password::md5(b"pw", "bob")).unwrap();
    assert!(!md5_verify(&bobs, "alice", salt, &response));
    assert!(!md5_verify(
        &plain,
        "alice",
        [0, 0, 0, 1],
        &md5_password("alice", "pw", [0; 4])
    ));
    assert!(!md5_verify(
        &plain,
        "alice",
        salt,
        &md5_password("alice", "nope", salt)
    ));
    assert!(!md5_verify(&plain, "alice", salt, b""));
    let scram = Verifier::Scram(cheap_secret(b"pw"));
    assert!(!md5_verify(&scram, "alice", salt, &response));
}

#[test]
fn md5_known_answer() {
    // From postgres-protocol's own test of md5_hash.
    let salt = [0x2a, 0x3d, 0x8f, 0xe0];
    let plain = Verifier::Plain("password".into());
    assert!(md5_verify(
        &plain,
        "md5_user",
        salt,
        b"md562af4dd09bbb41884907a838a3233294"
    ));
}

#[test]
fn plain_verify_all_verifiers() {
    let plain = Verifier::Plain("pw".into());
    let md5 = Verifier::parse_hash(&postgres_protocol::password::md5(b"pw", "alice")).unwrap();
    let scram = Verifier::Scram(cheap_secret(b"pw"));
    for verifier in [&plain, &md5, &scram] {
        assert!(plain_verify(verifier, "alice", b"pw"), "{verifier:?}");
        assert!(!plain_verify(verifier, "alice", b"pw2"), "{verifier:?}");
        assert!(!plain_verify(verifier, "alice", b""), "{verifier:?}");
    }
    assert!(!plain_verify(&md5, "bob", b"pw"));
}

#[test]
fn debug_output_hides_secrets() {
    let text = format!(
        "{:?} {:?}",
        Verifier::Plain("topsecret".into()),
        Verifier::Scram(cheap_secret(b"pw"))
    );
    assert!(!text.contains("topsecret"));
    assert!(!text.contains("stored"));
}

/// xorshift64*, so that failures are reproducible without a seed dump.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Bytes biased towards SCRAM syntax so the parser gets past its first
    /// checks often.
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"npyrcsvmai=,,,==biwseSws+/AZ09\0\xff\xc3";
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len)
            .map(|_| {
                let r = self.next();
                if r.is_multiple_of(4) {
                    (r >> 8) as u8
                } else {
                    ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                }
            })
            .collect()
    }
}

#[test]
fn garbage_never_panics() {
    let secret = cheap_secret(b"pw");
    let good_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".as_slice();
    let proof = STANDARD.encode([1u8; 32]);
    let good_final = format!("c=biws,r=rOprNGfwEbeRWgbNEkqOS,p={proof}");
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);

    let mut inputs: Vec<Vec<u8>> = (0..3000).map(|_| noise.bytes(80)).collect();
    for len in 0..=good_final.len() {
        inputs.push(good_final.as_bytes()[..len].to_vec());
    }
    for len in 0..=good_first.len() {
        inputs.push(good_first[..len].to_vec());
    }

    for input in &inputs {
        let _ = ScramServer::new(secret.clone()).client_first(SCRAM_SHA_256, input);
        let mut server = ScramServer::with_nonce(secret.clone(), "S".into());
        server.client_first(SCRAM_SHA_256, good_first).unwrap();
        let result = server.client_final(input);
        assert!(
            matches!(
                result,
                Err(AuthError::Malformed(_) | AuthError::WrongPassword)
            ),
            "{input:?} gave {result:?}"
        );
        let _ = Verifier::parse_hash(&String::from_utf8_lossy(input));
        let _ = md5_verify(&Verifier::Md5([b'a'; 32]), "u", [0; 4], input);

        let mut client = ScramClient::new(b"pw");
        let _ = client.server_first(input);
        let _ = client.server_final(input);
        let _ = client.client_first();
    }
}
