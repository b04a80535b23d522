//! `paddock login`, `paddock logout`, and the tokens every other command uses.
//!
//! A login (password, plus a TOTP code when the account has one; or `--device`, the
//! RFC 8628 device grant, where a signed-in user approves a short code) leaves a
//! refresh token and a short-lived access token in `credentials.json` in the user's
//! config folder (`$PADDOCK_CONFIG_DIR`, else `$XDG_CONFIG_HOME/paddock`, else
//! `~/.config/paddock`), one entry per gateway URL, in a file only its owner can read
//! (0600, replaced atomically). Every command then takes its access token from there,
//! refreshing it when it has less than a minute left. Refresh tokens are rotated on
//! every use and a reused one ends the sign-in, so two commands must not refresh at
//! once: a lock file beside the credentials serialises them. An OS keychain is not
//! used yet.
//!
//! `--token` / `PADDOCK_TOKEN` (a service token, or an access token) bypasses all this.

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Refresh when the access token has less than this left.
const REFRESH_MARGIN_SECS: u64 = 60;
/// A lock older than this was left by a process that died.
const STALE_LOCK: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Your user name.
    #[arg(long, short)]
    user: Option<String>,
    /// Read the password from this file (its first line) instead of asking.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The code of your authenticator app (asked for when the account needs one).
    #[arg(long)]
    totp: Option<String>,
    /// How this machine appears in your device list (default: its host name).
    #[arg(long)]
    device_name: Option<String>,
    /// Sign in by approving a code from a device where you are signed in.
    #[arg(long, conflicts_with_all = ["user", "password_file", "password_stdin", "approve"])]
    device: bool,
    /// Approve another device's sign-in code (with --deny: refuse it).
    #[arg(long, value_name = "CODE")]
    approve: Option<String>,
    #[arg(long, requires = "approve")]
    deny: bool,
}

/// A failure the gateway answered with its stable code.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// A small JSON client for the account and admin routes.
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Api> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("paddock/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http,
        })
    }

    /// Sends `method path` with an optional JSON body; a 4xx/5xx becomes an
    /// [`ApiFailure`] (reachable with `downcast_ref`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("reading the gateway's answer")?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "unexpected answer from the gateway: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        }
        let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |key: &str| error["error"][key].as_str().unwrap_or_default().to_string();
        Err(ApiFailure {
            status: status.as_u16(),
            code: text("code"),
            message: match text("message") {
                m if m.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
                m => m,
            },
        }
        .into())
    }
}

/// The gateway's failure code of an error, if it is one.
pub fn failure_code(error: &anyhow::Error) -> Option<&str> {
    error.downcast_ref::<ApiFailure>().map(|f| f.code.as_str())
}

/// What a login, refresh or device grant answers.
#[derive(Deserialize)]
struct Tokens {
    access_token: String,
    expires_in: u64,
    refresh_token: String,
    device_id: String,
    user: String,
}

/// One gateway's sign-in, as stored.
#[derive(Clone, Serialize, Deserialize)]
struct Saved {
    user: String,
    device_id: String,
    refresh_token: String,
    access_token: String,
    /// Unix seconds.
    access_expires_at: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Store {
    #[serde(default)]
    gateways: BTreeMap<String, Saved>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PADDOCK_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("paddock"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no HOME: set PADDOCK_CONFIG_DIR to where paddock may keep its sign-in")?;
    Ok(PathBuf::from(home).join(".config/paddock"))
}

fn key(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

impl Store {
    fn path(dir: &Path) -> PathBuf {
        dir.join("credentials.json")
    }

    fn load(dir: &Path) -> anyhow::Result<Store> {
        match std::fs::read_to_string(Store::path(dir)) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is unreadable", Store::path(dir).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::default()),
            Err(e) => Err(e).context("reading the stored sign-in"),
        }
    }

    /// Writes the file whole: a temporary file (0600) renamed over the old one.
    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        create_private_dir(dir)?;
        let temporary = dir.join(format!(".credentials-{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(self)?;
        write_private(&temporary, text.as_bytes())?;
        std::fs::rename(&temporary, Store::path(dir)).context("storing the sign-in")?;
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Held while a command reads, refreshes and writes the stored sign-in.
struct Lock(PathBuf);

impl Lock {
    async fn take(dir: &Path) -> anyhow::Result<Lock> {
        create_private_dir(dir)?;
        let path = dir.join("credentials.lock");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(Lock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "{} is held by another paddock command; remove it if none runs",
                            path.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Saved {
    fn from_tokens(tokens: Tokens) -> Saved {
        Saved {
            user: tokens.user,
            device_id: tokens.device_id,
            refresh_token: tokens.refresh_token,
            access_token: tokens.access_token,
            access_expires_at: now_secs() + tokens.expires_in,
        }
    }
}

/// The bearer token for commands: `given` if set, else the stored sign-in's access
/// token, refreshed first when it is about to expire.
pub async fn token_for(url: &str, given: &str) -> anyhow::Result<String> {
    if !given.is_empty() {
        return Ok(given.to_string());
    }
    let dir = config_dir()?;
    let _lock = Lock::take(&dir).await?;
    let mut store = Store::load(&dir)?;
    let Some(saved) = store.gateways.get(&key(url)).cloned() else {
        bail!(
            "not signed in to {url}: run `paddock login --user NAME` (or set PADDOCK_TOKEN to a service token)"
        );
    };
    if saved.access_expires_at > now_secs() + REFRESH_MARGIN_SECS {
        return Ok(saved.access_token);
    }
    let api = Api::new(url, None)?;
    let answer: anyhow::Result<Tokens> = api
        .call(
            reqwest::Method::POST,
            "/v1/auth/refresh",
            Some(&json!({ "refresh_token": saved.refresh_token })),
        )
        .await;
    match answer {
        Ok(tokens) => {
            let renewed = Saved::from_tokens(tokens);
            let access = renewed.access_token.clone();
            store.gateways.insert(key(url), renewed);
            store.save(&dir)?;
            Ok(access)
        }
        Err(error) if failure_code(&error) == Some("invalid_grant") => {
            store.gateways.remove(&key(url));
            store.save(&dir)?;
            bail!("your sign-in to {url} has ended: run `paddock login` again")
        }
        Err(error) => Err(error).context("refreshing the sign-in"),
    }
}

/// Reads a password from a file, standard input, or the terminal (not echoed).
pub fn read_password(prompt: &str, file: Option<&Path>, stdin: bool) -> anyhow::Result<String> {
    let password = if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the password file {}", file.display()))?;
        text.lines().next().unwrap_or_default().to_string()
    } else if stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(prompt).context("reading the password")?
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    Ok(password)
}

fn ask(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn host_name() -> String {
    std::process::Command::new("hostname")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "paddock CLI".into())
}

fn remember(url: &str, tokens: Tokens) -> anyhow::Result<String> {
    let dir = config_dir()?;
    let mut store = Store::load(&dir)?;
    let saved = Saved::from_tokens(tokens);
    let user = saved.user.clone();
    store.gateways.insert(key(url), saved);
    store.save(&dir)?;
    Ok(user)
}

pub async fn login(url: &str, token: &str, args: LoginArgs) -> anyhow::Result<i32> {
    if let Some(code) = &args.approve {
        return approve(url, token, code, !args.deny).await;
    }
    let device_name = args.device_name.clone().unwrap_or_else(host_name);
    let tokens = if args.device {
        device_login(url, &device_name).await?
    } else {
        password_login(url, &args, &device_name).await?
    };
    let _lock = Lock::take(&config_dir()?).await?;
    let user = remember(url, tokens)?;
    println!("signed in to {url} as {user}");
    Ok(0)
}

async fn password_login(url: &str, args: &LoginArgs, device_name: &str) -> anyhow::Result<Tokens> {
    let user = match &args.user {
        Some(user) => user.clone(),
        None => ask("User: ")?,
    };
    let password = read_password(
        &format!("Password for {user}: "),
        args.password_file.as_deref(),
        args.password_stdin,
    )?;
    let api = Api::new(url, None)?;
    let mut body = json!({ "user": user, "password": password, "device_name": device_name });
    if let Some(code) = &args.totp {
        body["totp"] = json!(code);
    }
    match api
        .call::<Tokens>(reqwest::Method::POST, "/v1/auth/login", Some(&body))
        .await
    {
        Err(error) if failure_code(&error) == Some("totp_required") && args.totp.is_none() => {
            body["totp"] = json!(ask("One-time code: ")?);
            api.call(reqwest::Method::POST, "/v1/auth/login", Some(&body))
                .await
                .context("signing in")
        }
        other => other.context("signing in"),
    }
}

#[derive(Deserialize)]
struct GrantStarted {
    device_code: String,
    user_code: String,
    verification_uri: String,
    expires_in: u64,
    interval: u64,
}

async fn device_login(url: &str, device_name: &str) -> anyhow::Result<Tokens> {
    let api = Api::new(url, None)?;
    let grant: GrantStarted = api
        .call(
            reqwest::Method::POST,
            "/v1/auth/device",
            Some(&json!({ "client_name": device_name })),
        )
        .await
        .context("starting a device sign-in")?;
    eprintln!(
        "To sign in this device, approve the code {code} where you are signed in:\n\n    paddock login --approve {code}\n\n(or POST it to {uri}). Waiting up to {minutes} minutes…",
        code = grant.user_code,
        uri = grant.verification_uri,
        minutes = grant.expires_in.div_ceil(60),
    );
    let mut interval = Duration::from_secs(grant.interval.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grant.expires_in);
    loop {
        tokio::time::sleep(interval).await;
        let answer: anyhow::Result<Tokens> = api
            .call(
                reqwest::Method::POST,
                "/v1/auth/device/token",
                Some(&json!({ "device_code": grant.device_code })),
            )
            .await;
        match answer {
            Ok(tokens) => return Ok(tokens),
            Err(error) => match failure_code(&error) {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += Duration::from_secs(5),
                Some("access_denied") => bail!("the sign-in was refused"),
                Some("expired_token") => {
                    bail!("the code expired; run `paddock login --device` again")
                }
                _ => return Err(error).context("waiting for the approval"),
            },
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the code expired; run `paddock login --device` again");
        }
    }
}

async fn approve(url: &str, token: &str, code: &str, approve: bool) -> anyhow::Result<i32> {
    let token = token_for(url, token).await?;
    let api = Api::new(url, Some(&token))?;
    let answer: Value = api
        .call(
            reqwest::Method::POST,
            "/v1/auth/device/approve",
            Some(&json!({ "user_code": code, "approve": approve })),
        )
        .await
        .context("deciding on the device's code")?;
    let client = answer["client_name"].as_str().unwrap_or("the device");
    if approve {
        println!("approved: {client} is now signed in as you");
    } else {
        println!("refused the sign-in of {client}");
    }
    Ok(0)
}

/// Ends this machine's sign-in at the gateway and forgets its tokens.
pub async fn logout(url: &str, token: &str) -> anyhow::Result<i32> {
    let access = token_for(url, token).await;
    if let Ok(access) = &access {
        let api = Api::new(url, Some(access))?;
        if let Err(e) = api
            .call::<Value>(reqwest::Method::POST, "/v1/auth/logout", Some(&json!({})))
            .await
        {
            eprintln!("(the gateway did not confirm the logout: {e:#})");
        }
    }
    let dir = config_dir()?;
    let _lock = Lock::take(&dir).await?;
    let mut store = Store::load(&dir)?;
    if store.gateways.remove(&key(url)).is_some() {
        store.save(&dir)?;
        println!("signed out of {url}");
    } else {
        println!("not signed in to {url}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(user: &str) -> Saved {
        Saved {
            user: user.into(),
            device_id: "d1".into(),
            refresh_token: "pdr_secret".into(),
            access_token: "access".into(),
            access_expires_at: 1,
        }
    }

    #[test]
    fn credentials_are_kept_per_gateway_in_a_private_file() {
        let dir = tempfile::tempdir().expect("dir");
        let folder = dir.path().join("paddock");
        let mut store = Store::load(&folder).expect("empty");
        assert!(store.gateways.is_empty());
        store.gateways.insert(key("http://a:8080/"), saved("ada"));
        store.gateways.insert(key("http://b:8080"), saved("bob"));
        store.save(&folder).expect("save");
        let again = Store::load(&folder).expect("load");
        assert_eq!(again.gateways.len(), 2);
        assert_eq!(
            again.gateways.get("http://a:8080").map(|s| s.user.as_str()),
            Some("ada")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&Store::path(&folder)), 0o600);
            assert_eq!(mode(&folder), 0o700);
        }
        let leftovers: Vec<_> = std::fs::read_dir(&folder)
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("credentials.json")]
        );
    }

    #[tokio::test]
    async fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("dir");
        let first = Lock::take(dir.path()).await.expect("lock");
        let waiting = tokio::spawn({
            let path = dir.path().to_path_buf();
            async move { Lock::take(&path).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "a second holder got the lock");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the lock was released")
            .expect("task")
            .expect("lock");
    }

    #[test]
    fn passwords_come_from_the_first_line_of_a_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "secret words\nignored\n").expect("write");
        assert_eq!(
            read_password("", Some(&file), false).expect("read"),
            "secret words"
        );
        std::fs::write(&file, "\n").expect("write");
        assert!(read_password("", Some(&file), false).is_err());
    }
}
