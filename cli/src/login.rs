//! `paddock login`, `paddock logout`, and the tokens every other command uses.
//!
//! A login (password, plus a TOTP code when the account has one; or `--device`, the
//! RFC 8628 device grant, where a signed-in user approves a short code) leaves a
//! refresh token and a short-lived access token. The refresh token goes to the OS
//! keychain where there is one ([`crate::keychain`]: the macOS Keychain, the Secret
//! Service of a Linux desktop); on a machine without one (a headless Linux box, CI)
//! the login says so once and keeps it in the file with the rest. That file is
//! `credentials.json` in the user's config folder (`$PADDOCK_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/paddock`, else `~/.config/paddock`), one entry per gateway URL,
//! readable only by its owner (0600, replaced atomically); it also remembers the CA
//! certificate the login was told to trust (`--ca-cert`), so later commands need no
//! flag. Every command takes its access token from there, refreshing it when it has
//! less than a minute left. Refresh tokens are rotated on every use and a reused one
//! ends the sign-in, so two commands must not refresh at once: a lock file beside the
//! credentials serialises them.
//!
//! `--token` / `PADDOCK_TOKEN` (a service token, or an access token) bypasses all this.

use crate::keychain::Keychain;
use anyhow::{Context, bail};
use paddock_cli::client::Trust;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    trust: Trust,
}

impl Api {
    /// A client trusting what this process trusts (`--ca-cert`, the saved login's CA).
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Api> {
        let trust = Trust::of_process();
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http: trust.http_client(Some(Duration::from_secs(30)))?,
            trust,
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
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let error = anyhow::Error::new(e)
                    .context(format!("cannot reach the gateway at {}", self.base));
                return Err(self.trust.explain(error));
            }
        };
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
    /// Empty when the OS keychain keeps it (`refresh_token_in_keychain`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    refresh_token: String,
    #[serde(default)]
    refresh_token_in_keychain: bool,
    access_token: String,
    /// Unix seconds.
    access_expires_at: u64,
    /// The CA certificate trusted for this gateway (`--ca-cert` at login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_cert: Option<PathBuf>,
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
        paddock_cli::private_file::write(&temporary, text.as_bytes())?;
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
    fn from_tokens(tokens: Tokens, ca_cert: Option<PathBuf>) -> Saved {
        Saved {
            user: tokens.user,
            device_id: tokens.device_id,
            refresh_token: tokens.refresh_token,
            refresh_token_in_keychain: false,
            access_token: tokens.access_token,
            access_expires_at: now_secs() + tokens.expires_in,
            ca_cert,
        }
    }

    /// The keychain entry of this sign-in: one per gateway and device, so two config
    /// folders signed in to one gateway never share an entry.
    fn keychain_account(&self, url: &str) -> String {
        format!("{} {}", key(url), self.device_id)
    }
}

/// Runs a (blocking) keychain call off the async threads.
async fn with_keychain<T: Send + 'static>(
    keychain: &Arc<Keychain>,
    call: impl FnOnce(&Keychain) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let keychain = keychain.clone();
    tokio::task::spawn_blocking(move || call(&keychain))
        .await
        .context("the keychain call panicked")
}

/// The OS keychain, or the reason there is none (connecting may block).
async fn open_keychain() -> Arc<Keychain> {
    match tokio::task::spawn_blocking(Keychain::open).await {
        Ok(keychain) => Arc::new(keychain),
        Err(e) => Arc::new(Keychain::unavailable(&format!(
            "opening the keychain panicked: {e}"
        ))),
    }
}

/// Moves `saved`'s refresh token into the keychain. When that cannot be done it stays
/// in `saved` (so in the private file), and the reason is returned.
async fn keep_refresh_token(
    keychain: &Arc<Keychain>,
    url: &str,
    saved: &mut Saved,
) -> Option<String> {
    let account = saved.keychain_account(url);
    let token = saved.refresh_token.clone();
    let outcome = with_keychain(keychain, move |keychain| keychain.set(&account, &token))
        .await
        .unwrap_or_else(|e| Err(format!("{e:#}")));
    match outcome {
        Ok(()) => {
            saved.refresh_token.clear();
            saved.refresh_token_in_keychain = true;
            None
        }
        Err(reason) => {
            saved.refresh_token_in_keychain = false;
            Some(reason)
        }
    }
}

/// Forgets `saved`'s keychain entry, if it has one; a failure is only reported.
async fn forget_refresh_token(keychain: &Arc<Keychain>, url: &str, saved: &Saved) {
    if !saved.refresh_token_in_keychain {
        return;
    }
    let account = saved.keychain_account(url);
    let outcome = with_keychain(keychain, move |keychain| keychain.delete(&account))
        .await
        .unwrap_or_else(|e| Err(format!("{e:#}")));
    if let Err(reason) = outcome {
        eprintln!("(could not remove the old refresh token from the OS keychain: {reason})");
    }
}

/// The CA certificate remembered by the sign-in to `url`, if any.
pub fn saved_ca_cert(url: &str) -> Option<PathBuf> {
    let store = Store::load(&config_dir().ok()?).ok()?;
    store.gateways.get(&key(url))?.ca_cert.clone()
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
    // Only a sign-in whose token is in the keychain touches it: one kept in the file
    // (no keychain at login) stays there without asking again on every refresh.
    let keychain = if saved.refresh_token_in_keychain {
        let keychain = open_keychain().await;
        let account = saved.keychain_account(url);
        let token = with_keychain(&keychain, move |keychain| keychain.get(&account))
            .await?
            .map_err(|reason| {
                anyhow::anyhow!(
                    "cannot read the refresh token of your sign-in to {url} from the OS keychain \
                     ({reason}): unlock the keychain, or run `paddock login` again"
                )
            })?;
        Some((keychain, token))
    } else {
        None
    };
    let refresh_token = match &keychain {
        Some((_, token)) => token.clone(),
        None => saved.refresh_token.clone(),
    };
    let api = Api::new(url, None)?;
    let answer: anyhow::Result<Tokens> = api
        .call(
            reqwest::Method::POST,
            "/v1/auth/refresh",
            Some(&json!({ "refresh_token": refresh_token })),
        )
        .await;
    match answer {
        Ok(tokens) => {
            let mut renewed = Saved::from_tokens(tokens, saved.ca_cert.clone());
            if let Some((keychain, _)) = &keychain {
                if let Some(reason) = keep_refresh_token(keychain, url, &mut renewed).await {
                    // The old token is spent: the new one must be kept somewhere.
                    eprintln!(
                        "(could not update the OS keychain ({reason}); the refresh token is now kept in {})",
                        Store::path(&dir).display()
                    );
                }
                if renewed.device_id != saved.device_id {
                    forget_refresh_token(keychain, url, &saved).await;
                }
            }
            let access = renewed.access_token.clone();
            store.gateways.insert(key(url), renewed);
            store.save(&dir)?;
            Ok(access)
        }
        Err(error) if failure_code(&error) == Some("invalid_grant") => {
            store.gateways.remove(&key(url));
            store.save(&dir)?;
            if let Some((keychain, _)) = &keychain {
                forget_refresh_token(keychain, url, &saved).await;
            }
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

/// What [`remember`] did.
struct Remembered {
    user: String,
    /// Why the refresh token is in the file: there is no keychain (or it refused).
    no_keychain: Option<String>,
}

/// Stores a new sign-in to `url` in `dir`: its refresh token in `keychain` when it
/// takes it, else in the file; the sign-in it replaces leaves the keychain.
async fn remember(
    dir: &Path,
    url: &str,
    tokens: Tokens,
    ca_cert: Option<PathBuf>,
    keychain: &Arc<Keychain>,
) -> anyhow::Result<Remembered> {
    let mut store = Store::load(dir)?;
    let mut saved = Saved::from_tokens(tokens, ca_cert);
    let no_keychain = keep_refresh_token(keychain, url, &mut saved).await;
    let user = saved.user.clone();
    let replaced = store.gateways.insert(key(url), saved.clone());
    store.save(dir)?;
    if let Some(replaced) = replaced.filter(|old| old.device_id != saved.device_id) {
        forget_refresh_token(keychain, url, &replaced).await;
    }
    Ok(Remembered { user, no_keychain })
}

/// `paddock login`; `ca_cert` (absolute) is remembered with the sign-in.
pub async fn login(
    url: &str,
    token: &str,
    ca_cert: Option<PathBuf>,
    args: LoginArgs,
) -> anyhow::Result<i32> {
    if let Some(code) = &args.approve {
        return approve(url, token, code, !args.deny).await;
    }
    let device_name = args.device_name.clone().unwrap_or_else(host_name);
    let tokens = if args.device {
        device_login(url, &device_name).await?
    } else {
        password_login(url, &args, &device_name).await?
    };
    let dir = config_dir()?;
    let _lock = Lock::take(&dir).await?;
    let keychain = open_keychain().await;
    let remembered = remember(&dir, url, tokens, ca_cert, &keychain).await?;
    if let Some(reason) = &remembered.no_keychain {
        eprintln!(
            "paddock: no OS keychain here ({reason});\nthe sign-in is kept in {}, readable only by you",
            Store::path(&dir).display()
        );
    }
    println!("signed in to {url} as {}", remembered.user);
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
    #[serde(default)]
    verification_uri_complete: Option<String>,
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
        "To sign in this device, approve the code {code} where you are signed in:\n\n    paddock login --approve {code}\n\nor open {uri} in the web app. Waiting up to {minutes} minutes…",
        code = grant.user_code,
        uri = grant
            .verification_uri_complete
            .as_deref()
            .unwrap_or(&grant.verification_uri),
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
    if let Some(saved) = store.gateways.remove(&key(url)) {
        store.save(&dir)?;
        if saved.refresh_token_in_keychain {
            forget_refresh_token(&open_keychain().await, url, &saved).await;
        }
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
            refresh_token_in_keychain: false,
            access_token: "access".into(),
            access_expires_at: 1,
            ca_cert: None,
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

    fn tokens(device: &str) -> Tokens {
        Tokens {
            access_token: "access".into(),
            expires_in: 900,
            refresh_token: format!("pdr_{device}"),
            device_id: device.into(),
            user: "ada".into(),
        }
    }

    const URL: &str = "https://mini.local:8080";

    fn credentials_text(folder: &Path) -> String {
        std::fs::read_to_string(Store::path(folder)).expect("credentials")
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn with_a_keychain_the_file_holds_no_refresh_token() {
        let dir = tempfile::tempdir().expect("dir");
        let folder = dir.path().join("paddock");
        let keychain = Arc::new(Keychain::in_memory());
        let ca = PathBuf::from("/data/tls/ca.pem");
        let first = remember(&folder, URL, tokens("d1"), Some(ca.clone()), &keychain)
            .await
            .expect("remembered");
        assert_eq!(first.user, "ada");
        assert!(first.no_keychain.is_none());
        assert!(!credentials_text(&folder).contains("pdr_d1"));
        assert_eq!(keychain.get(&format!("{URL} d1")).expect("kept"), "pdr_d1");
        let saved = Store::load(&folder).expect("load").gateways[URL].clone();
        assert!(saved.refresh_token_in_keychain);
        assert_eq!(saved.ca_cert, Some(ca));

        // A new sign-in replaces the old one's keychain entry.
        remember(&folder, URL, tokens("d2"), None, &keychain)
            .await
            .expect("remembered");
        assert!(
            keychain.get(&format!("{URL} d1")).is_err(),
            "the old entry stayed"
        );
        assert_eq!(keychain.get(&format!("{URL} d2")).expect("kept"), "pdr_d2");
    }

    #[tokio::test]
    async fn without_a_keychain_the_refresh_token_stays_in_the_private_file() {
        let dir = tempfile::tempdir().expect("dir");
        let folder = dir.path().join("paddock");
        let keychain = Arc::new(Keychain::unavailable("no Secret Service"));
        let remembered = remember(&folder, URL, tokens("d1"), None, &keychain)
            .await
            .expect("remembered");
        assert_eq!(remembered.no_keychain.as_deref(), Some("no Secret Service"));
        assert!(credentials_text(&folder).contains("pdr_d1"));
        let saved = Store::load(&folder).expect("load").gateways[URL].clone();
        assert!(!saved.refresh_token_in_keychain);
        assert_eq!(saved.refresh_token, "pdr_d1");
        #[cfg(unix)]
        assert_eq!(mode(&Store::path(&folder)), 0o600);
    }

    /// This machine's own keychain, whichever it is: on a headless Linux box (CI) the
    /// Secret Service is missing and the token must land in the file, without a panic
    /// or a hang; on a desktop it lands in the keychain and is removed again.
    #[tokio::test]
    async fn the_platform_keychain_or_else_the_file_keeps_the_token() {
        let dir = tempfile::tempdir().expect("dir");
        let folder = dir.path().join("paddock");
        let keychain = open_keychain().await;
        let device = format!("test-{}", std::process::id());
        let remembered = remember(&folder, URL, tokens(&device), None, &keychain)
            .await
            .expect("remembered");
        let text = credentials_text(&folder);
        let saved = Store::load(&folder).expect("load").gateways[URL].clone();
        match remembered.no_keychain {
            Some(reason) => {
                assert!(!reason.is_empty());
                assert!(text.contains(&format!("pdr_{device}")));
            }
            None => {
                assert!(!text.contains(&format!("pdr_{device}")));
                forget_refresh_token(&keychain, URL, &saved).await;
            }
        }
        #[cfg(unix)]
        assert_eq!(mode(&Store::path(&folder)), 0o600);
    }

    #[test]
    fn a_sign_in_saved_before_the_keychain_still_reads() {
        let old = r#"{"gateways": {"http://a:8080": {"user": "ada", "device_id": "d1",
            "refresh_token": "pdr_old", "access_token": "x", "access_expires_at": 1}}}"#;
        let store: Store = serde_json::from_str(old).expect("old format");
        let saved = &store.gateways["http://a:8080"];
        assert_eq!(saved.refresh_token, "pdr_old");
        assert!(!saved.refresh_token_in_keychain);
        assert!(saved.ca_cert.is_none());
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
