//! Email delivery of alerts over SMTP (issue 8, GAP-017), with `lettre`.
//!
//! The relay is the operator's, configured per node (`--smtp-url`,
//! `--smtp-from`, `AOS_SMTP_USERNAME` / `AOS_SMTP_PASSWORD`); tenants only
//! choose recipients (see [`aos_cp_state::email_recipients`]). The URL's
//! scheme says how the connection is protected, so a plaintext relay is
//! never chosen by accident:
//!
//! | scheme        | connection                         | default port |
//! |---------------|------------------------------------|--------------|
//! | `smtps://`    | TLS from the first byte            | 465          |
//! | `smtp://`     | STARTTLS, required                 | 587          |
//! | `smtp+plain://` | no TLS (a relay on the same host or a sidecar) | 25 |
//!
//! Credentials never appear in the URL (it is logged in the effective
//! configuration): a URL with `user@` is refused. The password is read from
//! the environment only and never logged.

use std::time::Duration;

use aos_cp_state::Alert;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Environment variable holding the SMTP user name.
pub const SMTP_USERNAME_ENV: &str = "AOS_SMTP_USERNAME";
/// Environment variable holding the SMTP password.
pub const SMTP_PASSWORD_ENV: &str = "AOS_SMTP_PASSWORD";

/// Why the SMTP relay settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The URL is malformed or unsupported.
    #[error("smtp_url `{url}`: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The sender address is not an address.
    #[error("smtp_from `{from}`: {why}")]
    From {
        /// The address as given.
        from: String,
        /// Why it does not parse.
        why: String,
    },
    /// A user name without a password (or the reverse).
    #[error("{SMTP_USERNAME_ENV} and {SMTP_PASSWORD_ENV} must be set together")]
    Credentials,
    /// Credentials over a connection without TLS to another host.
    #[error(
        "smtp+plain:// sends the password in clear: use smtps:// or smtp:// (STARTTLS), or a relay on this host"
    )]
    PlainCredentials,
}

/// How the relay connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`smtps://`).
    ImplicitTls,
    /// STARTTLS, required (`smtp://`).
    StartTls,
    /// No TLS at all (`smtp+plain://`).
    Plain,
}

/// A parsed relay URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connection protection.
    pub security: Security,
}

impl RelayUrl {
    /// Parses `smtps://host[:port]`, `smtp://host[:port]` or
    /// `smtp+plain://host[:port]`.
    pub fn parse(url: &str) -> Result<RelayUrl, EmailError> {
        let bad = |why: &str| EmailError::Url { url: url.to_owned(), why: why.to_owned() };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| bad("expected smtps://, smtp:// or smtp+plain://"))?;
        let (security, default_port) = match scheme {
            "smtps" => (Security::ImplicitTls, 465),
            "smtp" => (Security::StartTls, 587),
            "smtp+plain" => (Security::Plain, 25),
            _ => return Err(bad("the scheme must be smtps, smtp (STARTTLS required) or smtp+plain")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(bad(&format!(
                "credentials do not belong in the URL (it is logged); set {SMTP_USERNAME_ENV} and {SMTP_PASSWORD_ENV}"
            )));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(bad("the URL may hold only a host and a port"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[` in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the URL has no host"));
        }
        let port = match port {
            Some(p) => {
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port must be 1..=65535"))?
            }
            None => default_port,
        };
        Ok(RelayUrl { host: host.to_owned(), port, security })
    }
}

/// Sends alert emails through the configured relay.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    relay: RelayUrl,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("relay", &self.relay).field("from", &self.from.to_string()).finish()
    }
}

impl Mailer {
    /// A mailer for `url`, sending as `from`, with optional credentials
    /// (both or neither), each message given at most `timeout`.
    pub fn new(
        url: &str,
        from: &str,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Mailer, EmailError> {
        let relay = RelayUrl::parse(url)?;
        let from: Mailbox = from.parse().map_err(|e: lettre::address::AddressError| EmailError::From {
            from: from.to_owned(),
            why: e.to_string(),
        })?;
        let tls_error =
            |e: lettre::transport::smtp::Error| EmailError::Url { url: url.to_owned(), why: e.to_string() };
        let builder = match relay.security {
            Security::ImplicitTls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&relay.host).map_err(tls_error)?
            }
            Security::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&relay.host).map_err(tls_error)?
            }
            Security::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host),
        };
        let local = matches!(relay.host.as_str(), "localhost" | "127.0.0.1" | "::1");
        if relay.security == Security::Plain && credentials.is_some() && !local {
            return Err(EmailError::PlainCredentials);
        }
        let mut builder = builder.port(relay.port).timeout(Some(timeout));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Mailer { transport: builder.build(), from, relay })
    }

    /// Reads the credentials from [`SMTP_USERNAME_ENV`] and
    /// [`SMTP_PASSWORD_ENV`]: both or neither.
    pub fn credentials_from_env() -> Result<Option<(String, String)>, EmailError> {
        let read = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        match (read(SMTP_USERNAME_ENV), read(SMTP_PASSWORD_ENV)) {
            (Some(user), Some(password)) => Ok(Some((user, password))),
            (None, None) => Ok(None),
            _ => Err(EmailError::Credentials),
        }
    }

    /// The relay, for the start-up log.
    pub fn relay(&self) -> &RelayUrl {
        &self.relay
    }

    /// Sends `alert` to the channel's `recipients`. The Message-ID is
    /// derived from the alert, so a rare repeat after a leader change is
    /// recognisable as the same message. Errors never carry the password.
    pub async fn send_alert(&self, alert: &Alert, recipients: &[&str]) -> Result<(), String> {
        let message = self.message(alert, recipients)?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| format!("SMTP: {e}"))
    }

    fn message(&self, alert: &Alert, recipients: &[&str]) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("[AOS] {}", alert.message()))
            .message_id(Some(format!("<{}.{}@aos-alerts>", alert.alert_id, alert.tenant_id)));
        for to in recipients {
            let mailbox: Mailbox = to.parse().map_err(|e| format!("recipient `{to}`: {e}"))?;
            builder = builder.to(mailbox);
        }
        let details = serde_json::to_string_pretty(alert).map_err(|e| e.to_string())?;
        let body = format!(
            "{}\n\nTenant: {}\nAlert: {}\nTier: {}\nPolicy: {}\nSignal: {}\nValue: {} of {}\nRun: {}\nOccurrences: {}\n\n{}\n",
            alert.message(),
            alert.tenant_id,
            alert.alert_id,
            alert.tier,
            alert.policy_id.as_deref().unwrap_or("-"),
            alert.signal.as_deref().unwrap_or("-"),
            alert.value,
            alert.threshold,
            alert.run_id.as_deref().unwrap_or("-"),
            alert.occurrences,
            details
        );
        builder.header(ContentType::TEXT_PLAIN).body(body).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_say_how_the_connection_is_protected() {
        let url = RelayUrl::parse("smtps://mail.example.com").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.security),
            ("mail.example.com", 465, Security::ImplicitTls)
        );
        let url = RelayUrl::parse("smtp://mail.example.com:2587/").unwrap();
        assert_eq!((url.port, url.security), (2587, Security::StartTls));
        let url = RelayUrl::parse("smtp+plain://[::1]:2525").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.security), ("::1", 2525, Security::Plain));
    }

    #[test]
    fn bad_relay_urls_say_what_is_wrong() {
        for (url, expected) in [
            ("mail.example.com", "expected smtps://"),
            ("http://mail.example.com", "scheme must be"),
            ("smtps://user:secret@mail.example.com", "AOS_SMTP_PASSWORD"),
            ("smtp://mail.example.com:0", "port must be"),
            ("smtp://mail.example.com:99999", "port must be"),
            ("smtp://mail.example.com/path", "only a host and a port"),
            ("smtp://", "no host"),
            ("smtp://[::1", "unclosed"),
        ] {
            let err = RelayUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
        let err = Mailer::new("smtp://mail.example.com", "not an address", None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp_from"), "{err}");
        let credentials = || Some(("aos".to_owned(), "secret".to_owned()));
        let plain = Mailer::new(
            "smtp+plain://mail.example.com",
            "aos@example.com",
            credentials(),
            Duration::from_secs(1),
        );
        assert!(matches!(plain, Err(EmailError::PlainCredentials)));
        let local = Mailer::new(
            "smtp+plain://127.0.0.1:25",
            "aos@example.com",
            credentials(),
            Duration::from_secs(1),
        );
        assert!(local.is_ok());
        // TLS settings are built at construction (rustls with ring).
        for url in ["smtps://mail.example.com", "smtp://mail.example.com:2587"] {
            let mailer = Mailer::new(url, "aos@example.com", None, Duration::from_secs(1));
            assert!(mailer.is_ok(), "{url}: {mailer:?}");
        }
    }

    #[test]
    fn a_message_carries_the_alert_and_a_stable_id() {
        let mailer =
            Mailer::new("smtp+plain://127.0.0.1:2525", "AOS <aos@example.com>", None, Duration::from_secs(1))
                .unwrap();
        let alert = Alert {
            alert_id: "al-7".into(),
            tenant_id: "acme".into(),
            policy_id: Some("pol-tokens".into()),
            signal: Some("TOKENS".into()),
            tier: "NEAR_50".into(),
            run_id: Some("run-1".into()),
            value: 600,
            threshold: 1000,
            raised_at_ms: 1,
            occurrences: 1,
            deliveries: Vec::new(),
        };
        let message = mailer.message(&alert, &["ops@example.com", "sre@example.org"]).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("Message-ID: <al-7.acme@aos-alerts>"), "{text}");
        assert!(text.contains("To: ops@example.com, sre@example.org"), "{text}");
        assert!(text.contains("pol-tokens") && text.contains("NEAR_50"), "{text}");
        assert!(mailer.message(&alert, &["not an address"]).is_err());
    }
}
