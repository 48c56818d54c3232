//! An operator / account / user JWT chain made with nkeys, for testing `creds_file` auth against
//! a nats-server in operator mode (what `nsc` would generate).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

fn encode(claims: Value, issuer: &KeyPair) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let sig = issuer.sign(signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn claims(iss: &KeyPair, sub: &str, name: &str, nats: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"jti": crate::unique("jti"), "iat": now, "iss": iss.public_key(), "name": name,
           "sub": sub, "nats": nats})
}

/// A server config section and a creds file for one user with JetStream.
pub struct OperatorSetup {
    /// `operator`, `resolver` and `resolver_preload` lines for nats-server.
    pub server_config: String,
    /// The `.creds` file contents for the user.
    pub creds: String,
}

/// Makes an operator, an account with JetStream, and user `name` in it.
pub fn operator_setup(name: &str) -> OperatorSetup {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let system = KeyPair::new_account();
    let op_jwt = encode(
        claims(
            &operator,
            &operator.public_key(),
            "op",
            json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
        ),
        &operator,
    );
    let sys_jwt = encode(
        claims(
            &operator,
            &system.public_key(),
            "SYS",
            json!({
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                           "wildcards": true, "conn": -1, "leaf": -1},
                "type": "account", "version": 2
            }),
        ),
        &operator,
    );
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
        "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1,
        "consumer": -1, "max_ack_pending": -1, "mem_max_stream_bytes": -1,
        "disk_max_stream_bytes": -1, "max_bytes_required": false
    });
    let acc_jwt = encode(
        claims(
            &operator,
            &account.public_key(),
            "site",
            json!({
                "limits": unlimited, "default_permissions": {"pub": {}, "sub": {}},
                "type": "account", "version": 2
            }),
        ),
        &operator,
    );
    let user_jwt = encode(
        claims(
            &account,
            &user.public_key(),
            name,
            json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        ),
        &account,
    );
    let user_seed = user.seed().expect("seed");
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
    );
    let server_config = format!(
        "operator: {op_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: {sys_jwt}\n  {acc}: {acc_jwt}\n}}\n",
        sys = system.public_key(),
        acc = account.public_key()
    );
    OperatorSetup {
        server_config,
        creds,
    }
}
