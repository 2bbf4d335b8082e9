//! Credentials out of messages: the one place URLs are redacted before a
//! log line, an error, a report or an admin answer shows them.

use url::Url;

/// Words that mark a query parameter as a credential (matched in its
/// lowercase name): `password`, `sslpassword`, `token`, `api_key`, …
const SECRET_PARAMETER_WORDS: [&str; 7] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
];

/// `text` (a database URL, a Source API URL, a broker address) without its
/// user information (replaced by `***` when there was any) and without
/// query parameters that carry credentials; other parameters (`sslmode`,
/// `mode`) stay. Text that does not parse as a URL is returned as it is,
/// unless it may hold credentials (an `@`): then only a placeholder.
pub fn redact_url(text: &str) -> String {
    // `user:pw@host` parses as a URL without an authority (scheme `user`):
    // what looks like credentials there would stay in its path.
    let parsed = Url::parse(text)
        .ok()
        .filter(|url| url.has_host() || !text.contains('@'));
    let Some(mut url) = parsed else {
        return if text.contains('@') {
            "<unparsable URL with credentials>".to_owned()
        } else {
            text.to_owned()
        };
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Both fail only for URLs that cannot carry credentials at all.
        let _ = url.set_password(None);
        let _ = url.set_username("***");
    }
    if url.query().is_some() {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| {
                let name = name.to_lowercase();
                !SECRET_PARAMETER_WORDS
                    .iter()
                    .any(|word| name.contains(word))
            })
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_and_secret_parameters_are_removed() {
        let cases = [
            (
                "postgres://recon:s3cret@db:5432/replica?sslmode=verify-full",
                "postgres://***@db:5432/replica?sslmode=verify-full",
            ),
            ("postgres://app@db/mono", "postgres://***@db/mono"),
            (
                "postgres://db/replica?user=recon&password=s3cret&sslpassword=k3y",
                "postgres://db/replica?user=recon",
            ),
            (
                "https://monolith.example/api?access_token=t0ken",
                "https://monolith.example/api",
            ),
            (
                "sqlite://data/mono.db?mode=rwc",
                "sqlite://data/mono.db?mode=rwc",
            ),
            ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
            ("kafka-1:9092,kafka-2:9092", "kafka-1:9092,kafka-2:9092"),
            ("not a url", "not a url"),
            (
                "user:pw@host-without-scheme",
                "<unparsable URL with credentials>",
            ),
        ];
        for (text, redacted) in cases {
            assert_eq!(redact_url(text), redacted, "{text}");
        }
    }

    #[test]
    fn an_encoded_password_never_survives() {
        for text in [
            "postgres://u:p%40ss@h/d",
            "postgres://u:p@ss@h/d",
            "postgres://:only-password@h/d",
            "postgres://h/d?PassWord=p%40ss",
        ] {
            let redacted = redact_url(text);
            assert!(
                !redacted.contains("p%40ss")
                    && !redacted.contains("p@ss")
                    && !redacted.contains("only-password"),
                "{text} → {redacted}"
            );
        }
    }
}
