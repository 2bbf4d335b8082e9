//! Shared helpers: a monolith served on an ephemeral port, an HTTP client,
//! and the OpenAPI contract as a set of JSON-schema validators.

use anyhow::{Context, bail};
use recon_core::schema::Schema;
use recon_monolith::Monolith;
use recon_tests::{Backend, TestDatabase};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The bearer token the tests configure.
pub const TOKEN: &str = "test-token-5f2c";

/// A monolith on a fresh database, served over HTTP on 127.0.0.1.
pub struct Server {
    /// The monolith (for direct Rust calls).
    pub monolith: Monolith,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// A plain client.
    pub client: reqwest::Client,
    /// The token, if the server requires one.
    pub token: Option<String>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<recon_monolith::Result<()>>>,
    _database: TestDatabase,
}

impl Server {
    /// Starts a monolith on a fresh database of `backend`.
    pub async fn start(backend: Backend, token: Option<&str>) -> anyhow::Result<Server> {
        Server::start_with_schema(backend, token, Schema::default_schema().clone()).await
    }

    /// Starts a monolith of `schema` on a fresh database of `backend`.
    pub async fn start_with_schema(
        backend: Backend,
        token: Option<&str>,
        schema: Schema,
    ) -> anyhow::Result<Server> {
        let database = TestDatabase::create(backend).await?;
        let monolith = Monolith::connect_with_schema(&database.url, schema)
            .await
            .context("connect the monolith")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind an ephemeral port")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let serving = monolith.clone();
        let token_owned = token.map(str::to_owned);
        let serve_token = token_owned.clone();
        let serve_shutdown = shutdown.clone();
        let task =
            tokio::spawn(async move { serving.serve(listener, serve_token, serve_shutdown).await });
        Ok(Server {
            monolith,
            base_url,
            client: reqwest::Client::new(),
            token: token_owned,
            shutdown,
            task: Some(task),
            _database: database,
        })
    }

    /// `GET path` with the token (if any); returns status and JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let mut request = self.client.get(format!("{}{path}", self.base_url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        into_json(request.send().await.context("send GET")?).await
    }

    /// A request builder with the token (if any).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The database's URL (for checks with plain SQL).
    pub fn database_url(&self) -> &str {
        &self._database.url
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("join the server task")??;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Status and JSON body of a response (fails if the body is not JSON).
pub async fn into_json(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await.context("read the body")?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("status {status}: body is not JSON: {text:?}"))?;
    Ok((status, body))
}

/// A path item's operation: its GET, else its POST.
fn operation(item: &Value) -> &Value {
    match item.get("get") {
        Some(get) => get,
        None => &item["post"],
    }
}

/// The Source API contract, `proto/source-api.openapi.json`.
pub struct Contract {
    document: Value,
    covered: Mutex<BTreeSet<(String, u16)>>,
}

impl Contract {
    /// Loads and parses the document.
    pub fn load() -> anyhow::Result<Contract> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../proto/source-api.openapi.json"
        );
        let text = std::fs::read_to_string(path).context("read the OpenAPI document")?;
        let document: Value = serde_json::from_str(&text).context("parse the OpenAPI document")?;
        if document["openapi"]
            .as_str()
            .is_none_or(|version| !version.starts_with("3.1"))
        {
            bail!("the contract is not an OpenAPI 3.1 document");
        }
        Ok(Contract {
            document,
            covered: Mutex::new(BTreeSet::new()),
        })
    }

    /// Every `(path template, status)` the document declares (each path
    /// has one operation: GET, or POST for a read whose parameters do not
    /// fit a URL).
    pub fn declared(&self) -> BTreeSet<(String, u16)> {
        let mut declared = BTreeSet::new();
        let paths = self.document["paths"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (path, item) in paths {
            let responses = operation(&item)["responses"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for status in responses.keys() {
                if let Ok(status) = status.parse() {
                    declared.insert((path.clone(), status));
                }
            }
        }
        declared
    }

    /// The `(path, status)` pairs checked so far.
    pub fn covered(&self) -> BTreeSet<(String, u16)> {
        self.covered
            .lock()
            .map(|set| set.clone())
            .unwrap_or_default()
    }

    /// The whole document.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Follows a local `$ref` (`#/a/b`) if `value` is one.
    pub fn resolve<'a>(&'a self, value: &'a Value) -> anyhow::Result<&'a Value> {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return Ok(value);
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            bail!("non-local $ref {reference}");
        };
        self.document
            .pointer(pointer)
            .with_context(|| format!("dangling $ref {reference}"))
    }

    /// The JSON schema of the response `status` of `path_template`.
    pub fn response_schema(&self, path_template: &str, status: u16) -> anyhow::Result<&Value> {
        let responses = &operation(&self.document["paths"][path_template])["responses"];
        let Some(response) = responses.get(status.to_string()) else {
            bail!("the contract declares no {status} response for {path_template}");
        };
        let response = self.resolve(response)?;
        let schema = &response["content"]["application/json"]["schema"];
        if !schema.is_object() {
            bail!("{path_template} {status} has no JSON schema");
        }
        Ok(schema)
    }

    /// A validator of `schema` (one of the document's schemas), made
    /// self-contained: the document's components ride along so that
    /// `#/components/schemas/...` references resolve.
    pub fn validator(&self, schema: &Value) -> anyhow::Result<jsonschema::Validator> {
        let mut wrapper = schema.clone();
        wrapper["$schema"] = Value::from("https://json-schema.org/draft/2020-12/schema");
        wrapper["components"] = self.document["components"].clone();
        jsonschema::validator_for(&wrapper).map_err(|error| anyhow::anyhow!("{error}"))
    }

    /// Validates a real response against the contract.
    pub fn check(&self, path_template: &str, status: u16, body: &Value) -> anyhow::Result<()> {
        let schema = self.response_schema(path_template, status)?;
        let validator = self
            .validator(schema)
            .with_context(|| format!("invalid schema for {path_template} {status}"))?;
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        if !problems.is_empty() {
            bail!("GET {path_template} {status} violates the contract: {problems:?}\nbody: {body}");
        }
        if let Ok(mut covered) = self.covered.lock() {
            covered.insert((path_template.to_owned(), status));
        }
        Ok(())
    }
}
