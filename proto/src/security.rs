//! Who may talk to the coordinator: TLS for `https://` coordinator URLs, and a
//! shared bearer token sent on every call. The worker and the CLI connect through
//! [`ClientSecurity`]; the coordinator checks the same [`Token`].

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::liveness;

/// The environment variable that holds the token itself (`--token-file` wins).
pub const TOKEN_ENV: &str = "PASTICHE_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty: a token must not be blank")]
    EmptyToken(String),
    #[error("{0}: a token is printable ASCII without spaces")]
    BadToken(String),
    #[error("bad coordinator address '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--tls-ca is for an https:// coordinator, not '{0}'")]
    CaWithoutTls(String),
    #[error("the CA certificate {path} is not usable: {source}")]
    BadCa {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// The shared secret. Never printed: its `Debug` says only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The token in `text`, trimmed (files end with a newline). `source` names
    /// where it came from, for the error.
    pub fn parse(text: &str, source: &str) -> Result<Token, SecurityError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(SecurityError::EmptyToken(source.to_owned()));
        }
        // It travels in an HTTP header.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecurityError::BadToken(source.to_owned()));
        }
        Ok(Token(token.to_owned()))
    }

    /// The token from `file` if given, else from `env` (the value of
    /// [`TOKEN_ENV`]); `None` when neither is set.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<Token>, SecurityError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
                what: "the token file",
                path: path.to_owned(),
                source,
            })?;
            return Token::parse(&text, &format!("the token file {}", path.display())).map(Some);
        }
        env.map(|text| Token::parse(text, TOKEN_ENV)).transpose()
    }

    /// Whether an `authorization` header value is `Bearer <this token>`, in time
    /// that does not depend on where the two differ.
    pub fn authorizes(&self, header: &[u8]) -> bool {
        let Some(presented) = header.strip_prefix(b"Bearer ") else {
            return false;
        };
        presented.ct_eq(self.0.as_bytes()).into()
    }

    fn header(&self) -> MetadataValue<Ascii> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", self.0)
            .parse()
            .expect("checked printable ASCII");
        // Keeps it out of h2's and hyper's debug logs.
        value.set_sensitive(true);
        value
    }
}

/// How the worker and the CLI reach a coordinator: `--tls-ca` and the token.
#[derive(clap::Args, Clone, Default)]
pub struct ClientSecurityArgs {
    /// PEM file of the CA that signed the coordinator's certificate, for an
    /// https:// coordinator [default: the web's root CAs].
    #[arg(long, env = "PASTICHE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// File holding the coordinator's bearer token (or put the token itself in
    /// PASTICHE_TOKEN).
    #[arg(long, env = "PASTICHE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PASTICHE_TOKEN, read when the arguments are parsed. Not a flag, so that the
    /// secret never shows in a process list; and no `Debug`, so that it is never
    /// printed.
    #[arg(skip = std::env::var(TOKEN_ENV).ok())]
    pub token_env: Option<String>,
}

impl ClientSecurityArgs {
    pub fn load(&self) -> Result<ClientSecurity, SecurityError> {
        Ok(ClientSecurity {
            tls_ca: self.tls_ca.clone(),
            token: Token::load(self.token_file.as_deref(), self.token_env.as_deref())?,
        })
    }
}

/// TLS trust and credentials for calls to the coordinator. The default is
/// plaintext without a token, as `pastiche local` runs.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    pub tls_ca: Option<PathBuf>,
    pub token: Option<Token>,
}

/// A channel that sends the bearer token (if any) with every call.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to each request.
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl ClientSecurity {
    /// The endpoint for `url`: TLS for https://, trusting `tls_ca` or the web's
    /// roots; plaintext for http://. Its connections ping the server while idle
    /// (see [`crate::liveness`]).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, SecurityError> {
        let endpoint = Channel::from_shared(url.to_owned())
            .map_err(|e| SecurityError::BadUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?
            .http2_keep_alive_interval(liveness::KEEPALIVE_INTERVAL)
            .keep_alive_timeout(liveness::KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if !url.starts_with("https://") {
            return match self.tls_ca {
                Some(_) => Err(SecurityError::CaWithoutTls(url.to_owned())),
                None => Ok(endpoint),
            };
        }
        let tls = match &self.tls_ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| SecurityError::Read {
                    what: "the CA certificate",
                    path: path.clone(),
                    source,
                })?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        endpoint
            .tls_config(tls)
            .map_err(|source| SecurityError::BadCa {
                path: self.tls_ca.clone().unwrap_or_else(|| "(web roots)".into()),
                source,
            })
    }

    /// `channel`, sending the token with every call.
    pub fn authorize(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, Bearer(self.token.as_ref().map(Token::header)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_blank_ones_refused() {
        assert_eq!(
            Token::parse("  s3cret\n", "x").unwrap(),
            Token("s3cret".into())
        );
        assert!(matches!(
            Token::parse(" \n", "PASTICHE_TOKEN"),
            Err(SecurityError::EmptyToken(s)) if s == "PASTICHE_TOKEN"
        ));
        assert!(matches!(
            Token::parse("two words", "x"),
            Err(SecurityError::BadToken(_))
        ));
        assert!(Token::parse("caf\u{e9}", "x").is_err());
    }

    #[test]
    fn the_token_file_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let token = Token::load(Some(&file), Some("from-env")).unwrap();
        assert_eq!(token, Some(Token("from-file".into())));
        assert_eq!(
            Token::load(None, Some("from-env")).unwrap(),
            Some(Token("from-env".into()))
        );
        assert_eq!(Token::load(None, None).unwrap(), None);

        std::fs::write(&file, "\n").unwrap();
        let err = Token::load(Some(&file), Some("from-env")).unwrap_err();
        assert!(err.to_string().contains("token file"), "{err}");
        let missing = dir.path().join("missing");
        let err = Token::load(Some(&missing), None).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn only_the_exact_bearer_token_authorizes() {
        let token = Token::parse("s3cret", "x").unwrap();
        assert!(token.authorizes(b"Bearer s3cret"));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Bearer S3cret",
            b"bearer s3cret",
            b"s3cret",
            b"Basic s3cret",
            b"",
        ] {
            assert!(
                !token.authorizes(wrong),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = Token::parse("s3cret", "x").unwrap();
        let security = ClientSecurity {
            tls_ca: None,
            token: Some(token.clone()),
        };
        assert!(!format!("{token:?} {security:?}").contains("s3cret"));
    }

    #[test]
    fn a_ca_needs_an_https_url() {
        let security = ClientSecurity {
            tls_ca: Some("ca.pem".into()),
            token: None,
        };
        assert!(matches!(
            security.endpoint("http://127.0.0.1:1"),
            Err(SecurityError::CaWithoutTls(_))
        ));
        let err = security.endpoint("https://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert!(ClientSecurity::default()
            .endpoint("https://127.0.0.1:1")
            .is_ok());
    }
}
