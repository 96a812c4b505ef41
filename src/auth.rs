//! Token authentication: with `JWT_SECRET` (HS256) or `JWT_PUBLIC_KEY` (RS256 / ES256) set,
//! every `authenticate` needs a JWT, and the user id is the token's `sub`, never the client's
//! claim. Without either, the server runs in anonymous mode (see `signaling::handlers::authenticate`).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::model::{ErrorCode, Reject};
use crate::protocol::incoming::check_user_id;

/// Checks tokens against the configured key, audience and issuer.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// What token authentication needs of the settings (built by [`crate::config`]).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `JWT_SECRET`: an HS256 key of at least 32 bytes.
    pub jwt_secret: Option<String>,
    /// `JWT_PUBLIC_KEY`: an RS256 or ES256 public key in PEM.
    pub jwt_public_key: Option<String>,
    /// `JWT_AUDIENCE`: the `aud` every token must carry.
    pub jwt_audience: Option<String>,
    /// `JWT_ISSUER`: the `iss` every token must carry.
    pub jwt_issuer: Option<String>,
}

impl Verifier {
    /// The verifier the settings ask for, `None` in anonymous mode, or why the key is unusable.
    pub fn new(config: &Settings) -> Result<Option<Verifier>, String> {
        let (key, algorithms) = match (&config.jwt_secret, &config.jwt_public_key) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err("set JWT_SECRET or JWT_PUBLIC_KEY, not both".into()),
            (Some(secret), None) => {
                if secret.len() < 32 {
                    return Err("JWT_SECRET must have at least 32 bytes".into());
                }
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    vec![Algorithm::HS256],
                )
            }
            (None, Some(pem)) => public_key(pem)?,
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = 30;
        // A token valid only from a later time is refused until then.
        validation.validate_nbf = true;
        // A configured audience or issuer must be in the token, not merely match when present:
        // otherwise a token minted for another service, without either claim, would pass.
        let mut required = vec!["exp", "sub"];
        match &config.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Verifier { key, validation }))
    }

    /// The user id a valid token speaks for.
    pub fn verify(&self, token: &str) -> Result<String, Reject> {
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            let code = match e.kind() {
                ErrorKind::ExpiredSignature => ErrorCode::TokenExpired,
                ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => {
                    ErrorCode::TokenWrongAudience
                }
                ErrorKind::MissingRequiredClaim(c) if c == "aud" || c == "iss" => {
                    ErrorCode::TokenWrongAudience
                }
                _ => ErrorCode::TokenInvalid,
            };
            tracing::debug!(error = %e, "token refused");
            Reject::from(code)
        })?;
        let sub = data.claims.sub;
        check_user_id(&sub).map_err(|_| {
            Reject::new(
                ErrorCode::TokenInvalid,
                "the token's sub must be 1-64 characters of letters, digits and _-.:@",
            )
        })?;
        Ok(sub)
    }
}

/// A PEM public key (the text itself, or a path to a file holding it) and the algorithms it
/// verifies. `\n` escapes are accepted, as env files often hold a PEM on one line.
fn public_key(value: &str) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let pem = if value.contains("-----BEGIN") {
        value.replace("\\n", "\n")
    } else {
        std::fs::read_to_string(value)
            .map_err(|e| format!("JWT_PUBLIC_KEY: cannot read {value:?}: {e}"))?
    };
    if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((
            k,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        ));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        return Ok((k, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    Err("JWT_PUBLIC_KEY is neither an RSA nor an EC public key in PEM".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-that-is-long-enough!!";

    fn verifier(extra: &[&str]) -> Verifier {
        let mut flags = vec!["--jwt-secret", SECRET];
        flags.extend_from_slice(extra);
        Verifier::new(&crate::config::Config::from_flags(flags).unwrap().auth())
            .unwrap()
            .unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp(offset: i64) -> i64 {
        jsonwebtoken::get_current_timestamp() as i64 + offset
    }

    #[test]
    fn the_user_is_the_tokens_subject() {
        let v = verifier(&[]);
        let t = token(json!({"sub": "alice", "exp": exp(60)}), SECRET);
        assert_eq!(v.verify(&t).unwrap(), "alice");
    }

    #[test]
    fn forged_expired_and_misaddressed_tokens_are_refused_by_code() {
        let v = verifier(&["--jwt-audience", "roulette"]);
        let code = |t: &str| v.verify(t).unwrap_err().code;
        let good = json!({"sub": "a", "exp": exp(60), "aud": "roulette"});
        assert_eq!(v.verify(&token(good.clone(), SECRET)).unwrap(), "a");
        assert_eq!(
            code(&token(good, "another-secret-of-sufficient-length")),
            ErrorCode::TokenInvalid
        );
        assert_eq!(
            code(&token(
                json!({"sub": "a", "exp": exp(-3600), "aud": "roulette"}),
                SECRET
            )),
            ErrorCode::TokenExpired
        );
        assert_eq!(
            code(&token(
                json!({"sub": "a", "exp": exp(60), "aud": "other"}),
                SECRET
            )),
            ErrorCode::TokenWrongAudience
        );
        assert_eq!(
            code(&token(json!({"sub": "a", "aud": "roulette"}), SECRET)),
            ErrorCode::TokenInvalid,
            "exp is required"
        );
        assert_eq!(code("not.a.jwt"), ErrorCode::TokenInvalid);
        assert_eq!(
            code(&token(
                json!({"sub": "no spaces", "exp": exp(60), "aud": "roulette"}),
                SECRET
            )),
            ErrorCode::TokenInvalid
        );
    }

    #[test]
    fn a_configured_audience_and_issuer_must_be_in_the_token() {
        let v = verifier(&["--jwt-audience", "roulette", "--jwt-issuer", "https://idp"]);
        let code = |claims| v.verify(&token(claims, SECRET)).unwrap_err().code;
        let ok = json!({"sub": "a", "exp": exp(60), "aud": "roulette", "iss": "https://idp"});
        assert_eq!(v.verify(&token(ok, SECRET)).unwrap(), "a");
        assert_eq!(
            code(json!({"sub": "a", "exp": exp(60), "iss": "https://idp"})),
            ErrorCode::TokenWrongAudience,
            "no aud"
        );
        assert_eq!(
            code(json!({"sub": "a", "exp": exp(60), "aud": "roulette"})),
            ErrorCode::TokenWrongAudience,
            "no iss"
        );
        // Without the settings, neither claim is needed.
        let plain = verifier(&[]);
        let t = token(json!({"sub": "a", "exp": exp(60)}), SECRET);
        assert_eq!(plain.verify(&t).unwrap(), "a");
    }

    #[test]
    fn a_token_is_refused_before_its_not_before_time() {
        let v = verifier(&[]);
        let tomorrow = exp(86_400);
        let early = token(
            json!({"sub": "a", "exp": exp(2 * 86_400), "nbf": tomorrow}),
            SECRET,
        );
        assert_eq!(v.verify(&early).unwrap_err().code, ErrorCode::TokenInvalid);
        let valid = token(json!({"sub": "a", "exp": exp(60), "nbf": exp(-10)}), SECRET);
        assert_eq!(v.verify(&valid).unwrap(), "a");
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        let v = verifier(&[]);
        // {"alg":"none"} . {"sub":"a","exp":...} . (no signature)
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let t = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&json!({"sub": "a", "exp": exp(60)}).to_string())
        );
        assert_eq!(v.verify(&t).unwrap_err().code, ErrorCode::TokenInvalid);
    }

    #[test]
    fn identity_provider_keys_verify_their_tokens_and_no_others() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        for (alg, name) in [(Algorithm::RS256, "rs256"), (Algorithm::ES256, "es256")] {
            let private = std::fs::read(format!("{fixtures}/{name}-private.pem")).unwrap();
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
                _ => EncodingKey::from_ec_pem(&private).unwrap(),
            };
            let claims = json!({"sub": "idp-user", "exp": exp(60)});
            let signed = encode(&Header::new(alg), &claims, &key).unwrap();
            // The key by path, and inline with escaped newlines as env files hold it.
            let path = format!("{fixtures}/{name}-public.pem");
            let inline = std::fs::read_to_string(&path).unwrap().replace('\n', "\\n");
            for given in [path, inline] {
                let c = crate::config::Config::from_flags([format!("--jwt-public-key={given}")])
                    .unwrap();
                let v = Verifier::new(&c.auth()).unwrap().unwrap();
                assert_eq!(v.verify(&signed).unwrap(), "idp-user", "{name}");
                // An HS256 token made with the public key as its secret: the classic
                // algorithm-confusion forgery.
                let forged = token(
                    claims.clone(),
                    &std::fs::read_to_string(format!("{fixtures}/{name}-public.pem")).unwrap(),
                );
                assert_eq!(v.verify(&forged).unwrap_err().code, ErrorCode::TokenInvalid);
            }
        }
    }

    #[test]
    fn weak_or_conflicting_keys_are_refused_at_start() {
        let c = crate::config::Config::from_flags(["--jwt-secret", "short"]).unwrap();
        assert!(Verifier::new(&c.auth()).is_err());
        let c =
            crate::config::Config::from_flags(["--jwt-public-key=-----BEGIN PUBLIC KEY-----\nxx"])
                .unwrap();
        assert!(Verifier::new(&c.auth()).is_err());
        let c = crate::config::Config::from_flags(Vec::<String>::new()).unwrap();
        assert!(Verifier::new(&c.auth()).unwrap().is_none());
    }
}
