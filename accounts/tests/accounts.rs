//! The accounts store against real databases: every behaviour below runs once on a
//! SQLite file in a temporary folder and once on a fresh PostgreSQL database
//! (testkit), with the same body, since the store promises the same on both.

use anyhow::{Context, ensure};
use paddock_accounts::{
    Accounts, AccountsError, AccountsOptions, AuditEntry, AuditQuery, GrantDecision, GrantPoll,
    Outcome, PasswordCheck, PasswordCost, Rotation, Scope, ScopeSet, SessionState, TotpCheck,
    totp_code,
};
use std::time::Duration;

paddock_testkit::on_sqlite_and_postgres!(
    open = open;
    users_are_created_once_and_found_by_name_and_id,
    the_first_admin_is_created_only_on_an_empty_store,
    passwords_are_checked_and_refusals_give_a_reason,
    scopes_passwords_and_disabled_state_change,
    a_refresh_token_rotates_on_every_use,
    a_reused_refresh_token_revokes_its_family_and_device,
    concurrent_uses_of_one_refresh_token_let_at_most_one_through,
    revoking_a_device_ends_its_refresh_tokens,
    disabling_a_user_revokes_their_devices,
    expired_refresh_tokens_are_refused,
    totp_enrolment_needs_confirmation_and_codes_are_accepted_once,
    audit_records_are_filtered_and_paged_newest_first,
    a_device_grant_is_approved_once_and_yields_tokens_once,
    a_denied_or_expired_device_grant_yields_nothing,
    migrating_twice_changes_nothing,
);

const PASSWORD: &str = "correct horse battery staple";

async fn open(url: &str) -> anyhow::Result<Accounts> {
    Accounts::connect_with(url, options())
        .await
        .context("opening the accounts store")
}

fn options() -> AccountsOptions {
    AccountsOptions {
        password_cost: PasswordCost::TEST_ONLY,
        ..AccountsOptions::default()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn users_are_created_once_and_found_by_name_and_id(accounts: Accounts) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    assert_eq!(ada.name, "ada");
    assert_eq!(ada.scopes, ScopeSet::default_user());
    assert!(!ada.totp_enabled && !ada.disabled && !ada.is_admin());
    let again = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await;
    assert!(
        matches!(again, Err(AccountsError::UserExists(_))),
        "{again:?}"
    );
    for (name, password) in [("Ada", PASSWORD), ("bob", "short")] {
        let refused = accounts
            .create_user(name, password, &ScopeSet::default_user())
            .await;
        assert!(
            matches!(refused, Err(AccountsError::Invalid { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(accounts.user_by_id(&ada.id).await?, Some(ada.clone()));
    assert_eq!(accounts.user_by_name("ada").await?, Some(ada.clone()));
    assert_eq!(accounts.user_by_name("nobody").await?, None);
    accounts
        .create_user("bob", PASSWORD, &ScopeSet::new([Scope::JobsRead]))
        .await?;
    let names: Vec<String> = accounts
        .list_users()
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["ada", "bob"]);
    Ok(())
}

async fn the_first_admin_is_created_only_on_an_empty_store(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let admin = accounts
        .create_first_admin("admin", PASSWORD)
        .await?
        .context("the first admin")?;
    assert_eq!(admin.scopes, ScopeSet::all());
    assert!(admin.is_admin());
    assert_eq!(accounts.create_first_admin("other", PASSWORD).await?, None);
    assert_eq!(accounts.user_count().await?, 1);
    Ok(())
}

async fn passwords_are_checked_and_refusals_give_a_reason(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    assert_eq!(
        accounts.check_password("ada", PASSWORD).await?,
        PasswordCheck::Valid(ada.clone())
    );
    let reason = |check| match check {
        PasswordCheck::Refused { reason, .. } => reason,
        PasswordCheck::Valid(_) => "accepted",
    };
    assert_eq!(
        reason(accounts.check_password("ada", "wrong password!").await?),
        "wrong password"
    );
    assert_eq!(
        reason(accounts.check_password("nobody", PASSWORD).await?),
        "unknown user"
    );
    assert_eq!(
        reason(accounts.check_password("ADA'; --", PASSWORD).await?),
        "unknown user"
    );
    accounts.set_disabled("ada", true).await?;
    assert_eq!(
        reason(accounts.check_password("ada", PASSWORD).await?),
        "user disabled"
    );
    Ok(())
}

async fn scopes_passwords_and_disabled_state_change(accounts: Accounts) -> anyhow::Result<()> {
    accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let ada = accounts
        .set_scopes("ada", &ScopeSet::new([Scope::JobsRead, Scope::UsersAdmin]))
        .await?;
    assert!(ada.is_admin());
    assert!(!ada.scopes.contains(Scope::JobsSubmit));
    accounts
        .set_password("ada", "another long password")
        .await?;
    assert!(matches!(
        accounts.check_password("ada", PASSWORD).await?,
        PasswordCheck::Refused { .. }
    ));
    assert!(matches!(
        accounts
            .check_password("ada", "another long password")
            .await?,
        PasswordCheck::Valid(_)
    ));
    assert!(accounts.set_disabled("ada", true).await?.disabled);
    assert!(!accounts.set_disabled("ada", false).await?.disabled);
    assert!(matches!(
        accounts.set_scopes("nobody", &ScopeSet::all()).await,
        Err(AccountsError::NoSuchUser(_))
    ));
    Ok(())
}

async fn a_refresh_token_rotates_on_every_use(accounts: Accounts) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let session = accounts
        .start_session(&ada, "ada's phone", Some("10.1.2.3"))
        .await?;
    assert_eq!(session.device.name, "ada's phone");
    assert_eq!(
        accounts.session_state(&session.device.id).await?,
        SessionState::Active
    );
    assert_eq!(
        accounts.refresh_device(&session.refresh.token).await?,
        Some(session.device.id.clone())
    );
    let mut token = session.refresh.token.clone();
    for _ in 0..3 {
        match accounts.rotate_refresh(&token, Some("10.9.9.9")).await? {
            Rotation::Rotated {
                user,
                device_id,
                refresh,
            } => {
                assert_eq!(user, ada);
                assert_eq!(device_id, session.device.id);
                assert_eq!(refresh.family_id, session.refresh.family_id);
                assert_ne!(refresh.token, token);
                token = refresh.token;
            }
            other => anyhow::bail!("not rotated: {other:?}"),
        }
    }
    let device = accounts
        .device(&session.device.id)
        .await?
        .context("device")?;
    assert_eq!(device.last_address.as_deref(), Some("10.9.9.9"));
    assert!(matches!(
        accounts.rotate_refresh("pdr_not-a-token", None).await?,
        Rotation::Unknown
    ));
    Ok(())
}

async fn a_reused_refresh_token_revokes_its_family_and_device(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let session = accounts.start_session(&ada, "laptop", None).await?;
    let first = session.refresh.token.clone();
    let Rotation::Rotated { refresh, .. } = accounts.rotate_refresh(&first, None).await? else {
        anyhow::bail!("first use refused");
    };
    let second = refresh.token;
    // The first token again: the thief (or the owner) replays it.
    match accounts.rotate_refresh(&first, None).await? {
        Rotation::Reused {
            user_name,
            device_id,
            family_id,
        } => {
            assert_eq!(user_name, "ada");
            assert_eq!(device_id, session.device.id);
            assert_eq!(family_id, session.refresh.family_id);
        }
        other => anyhow::bail!("reuse not detected: {other:?}"),
    }
    // Both tokens are dead now, and so is the device's session.
    assert!(matches!(
        accounts.rotate_refresh(&second, None).await?,
        Rotation::Refused {
            reason: "revoked",
            ..
        }
    ));
    assert!(matches!(
        accounts.rotate_refresh(&first, None).await?,
        Rotation::Reused { .. }
    ));
    assert_eq!(
        accounts.session_state(&session.device.id).await?,
        SessionState::Revoked
    );
    let device = accounts
        .device(&session.device.id)
        .await?
        .context("device")?;
    assert_eq!(
        device.revoked_reason.as_deref(),
        Some("refresh token reused")
    );
    Ok(())
}

async fn concurrent_uses_of_one_refresh_token_let_at_most_one_through(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let session = accounts.start_session(&ada, "laptop", None).await?;
    let token = session.refresh.token.clone();
    let attempts = (0..4).map(|_| {
        let accounts = accounts.clone();
        let token = token.clone();
        tokio::spawn(async move { accounts.rotate_refresh(&token, None).await })
    });
    let mut rotated = 0;
    for attempt in attempts {
        if let Rotation::Rotated { .. } = attempt.await?? {
            rotated += 1;
        }
    }
    ensure!(
        rotated <= 1,
        "{rotated} concurrent uses of one token succeeded"
    );
    Ok(())
}

async fn revoking_a_device_ends_its_refresh_tokens(accounts: Accounts) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let phone = accounts.start_session(&ada, "phone", None).await?;
    let laptop = accounts.start_session(&ada, "laptop", None).await?;
    let listed: Vec<String> = accounts
        .list_devices(&ada.id, false)
        .await?
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(listed, ["laptop", "phone"]);
    assert!(accounts.revoke_device(&phone.device.id, "logout").await?);
    assert!(!accounts.revoke_device(&phone.device.id, "logout").await?);
    assert!(matches!(
        accounts.rotate_refresh(&phone.refresh.token, None).await?,
        Rotation::Refused { .. }
    ));
    assert!(matches!(
        accounts.rotate_refresh(&laptop.refresh.token, None).await?,
        Rotation::Rotated { .. }
    ));
    assert_eq!(accounts.list_devices(&ada.id, false).await?.len(), 1);
    assert_eq!(accounts.list_devices(&ada.id, true).await?.len(), 2);
    assert_eq!(
        accounts.session_state("no-such-device").await?,
        SessionState::Unknown
    );
    Ok(())
}

async fn disabling_a_user_revokes_their_devices(accounts: Accounts) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let session = accounts.start_session(&ada, "phone", None).await?;
    accounts.set_disabled("ada", true).await?;
    assert_eq!(
        accounts.session_state(&session.device.id).await?,
        SessionState::Revoked
    );
    assert!(matches!(
        accounts
            .rotate_refresh(&session.refresh.token, None)
            .await?,
        Rotation::Refused { .. }
    ));
    Ok(())
}

async fn expired_refresh_tokens_are_refused(accounts: Accounts) -> anyhow::Result<()> {
    // A store whose tokens live a moment, on the same database.
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let short = AccountsOptions {
        refresh_token_ttl: Duration::from_millis(1),
        ..options()
    };
    let url = accounts_url(&accounts);
    let short_lived = Accounts::connect_with(&url, short).await?;
    let session = short_lived.start_session(&ada, "phone", None).await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(
        accounts
            .rotate_refresh(&session.refresh.token, None)
            .await?,
        Rotation::Refused {
            reason: "expired",
            ..
        }
    ));
    short_lived.close().await;
    Ok(())
}

/// The URL an `Accounts` was opened with (tests use URLs without passwords, so the
/// shown URL is the real one).
fn accounts_url(accounts: &Accounts) -> String {
    accounts.shown_url().to_string()
}

async fn totp_enrolment_needs_confirmation_and_codes_are_accepted_once(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let now = now_secs();
    assert_eq!(
        accounts.check_totp(&ada.id, "123456", now).await?,
        TotpCheck::NotEnrolled
    );
    let enrolment = accounts.begin_totp(&ada.id).await?;
    assert!(
        enrolment
            .otpauth_uri
            .starts_with("otpauth://totp/Paddock:ada?secret="),
        "{}",
        enrolment.otpauth_uri
    );
    // Pending only: logins do not need it yet.
    assert!(
        !accounts
            .user_by_id(&ada.id)
            .await?
            .context("ada")?
            .totp_enabled
    );
    let code = totp_code(&enrolment.secret, now).context("code")?;
    let wrong: String = code
        .chars()
        .map(|c| {
            if c == '9' {
                '0'
            } else {
                char::from(c as u8 + 1)
            }
        })
        .collect();
    assert!(!accounts.confirm_totp(&ada.id, &wrong, now).await?);
    assert!(accounts.confirm_totp(&ada.id, &code, now).await?);
    assert!(
        accounts
            .user_by_id(&ada.id)
            .await?
            .context("ada")?
            .totp_enabled
    );
    // The code used to confirm cannot log in again; the next step's code can, once.
    assert_eq!(
        accounts.check_totp(&ada.id, &code, now).await?,
        TotpCheck::Replayed
    );
    let next = totp_code(&enrolment.secret, now + 30).context("code")?;
    assert_eq!(
        accounts.check_totp(&ada.id, &next, now + 30).await?,
        TotpCheck::Valid
    );
    assert_eq!(
        accounts.check_totp(&ada.id, &next, now + 30).await?,
        TotpCheck::Replayed
    );
    let later = totp_code(&enrolment.secret, now + 300).context("code")?;
    assert_eq!(
        accounts.check_totp(&ada.id, &later, now + 30).await?,
        TotpCheck::Invalid
    );
    assert!(!accounts.disable_totp("ada").await?.totp_enabled);
    assert_eq!(
        accounts.check_totp(&ada.id, &later, now + 300).await?,
        TotpCheck::NotEnrolled
    );
    Ok(())
}

async fn audit_records_are_filtered_and_paged_newest_first(
    accounts: Accounts,
) -> anyhow::Result<()> {
    for i in 0..5 {
        accounts
            .audit(
                AuditEntry::new("auth.login", Outcome::Success)
                    .actor("ada")
                    .address(Some("10.0.0.1".into()))
                    .target(format!("device-{i}")),
            )
            .await?;
    }
    accounts
        .audit(
            AuditEntry::new("auth.login", Outcome::Denied)
                .actor("bob")
                .detail("wrong password"),
        )
        .await?;
    accounts
        .audit(
            AuditEntry::new("user.create", Outcome::Success)
                .actor("ada")
                .target("bob"),
        )
        .await?;
    accounts
        .audit(AuditEntry::new("auth_login", Outcome::Success))
        .await?;

    let all = accounts.audit_query(&AuditQuery::default()).await?;
    assert_eq!(all.entries.len(), 8);
    assert!(
        all.entries.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    assert_eq!(all.entries[0].action, "auth_login");

    let query = |q: AuditQuery| {
        let accounts = accounts.clone();
        async move { accounts.audit_query(&q).await }
    };
    let denied = query(AuditQuery {
        outcome: Some(Outcome::Denied),
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(denied.entries.len(), 1);
    assert_eq!(denied.entries[0].actor.as_deref(), Some("bob"));
    assert_eq!(denied.entries[0].detail.as_deref(), Some("wrong password"));

    let auth = query(AuditQuery {
        action: Some("auth.".into()),
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(auth.entries.len(), 6, "a prefix, and `_` is no wildcard");

    let ada_logins = query(AuditQuery {
        actor: Some("ada".into()),
        action: Some("auth.login".into()),
        limit: Some(2),
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(ada_logins.entries.len(), 2);
    let cursor = ada_logins.next_before.clone().context("a next page")?;
    let rest = query(AuditQuery {
        actor: Some("ada".into()),
        action: Some("auth.login".into()),
        before: Some(cursor),
        limit: Some(10),
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(rest.entries.len(), 3);
    assert!(rest.next_before.is_none());
    let targets: Vec<_> = ada_logins
        .entries
        .iter()
        .chain(&rest.entries)
        .filter_map(|e| e.target.clone())
        .collect();
    assert_eq!(
        targets,
        ["device-4", "device-3", "device-2", "device-1", "device-0"]
    );

    let future = query(AuditQuery {
        since_ms: Some(paddock_accounts::now_ms() + 60_000),
        ..AuditQuery::default()
    })
    .await?;
    assert!(future.entries.is_empty());
    let past = query(AuditQuery {
        until_ms: Some(paddock_accounts::now_ms() + 60_000),
        target: Some("bob".into()),
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(past.entries.len(), 1);
    Ok(())
}

async fn a_device_grant_is_approved_once_and_yields_tokens_once(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let grant = accounts
        .start_device_grant(
            "build box",
            Some("10.0.0.7"),
            Duration::from_secs(600),
            Duration::ZERO,
        )
        .await?;
    assert_eq!(
        accounts.poll_device_grant(&grant.device_code).await?,
        GrantPoll::Pending
    );
    assert_eq!(
        accounts
            .pending_grant_client(&grant.user_code.to_lowercase())
            .await?
            .as_deref(),
        Some("build box")
    );
    assert_eq!(
        accounts
            .decide_device_grant(&grant.user_code.replace('-', ""), &ada, true)
            .await?,
        GrantDecision::Decided
    );
    assert_eq!(
        accounts
            .decide_device_grant(&grant.user_code, &ada, false)
            .await?,
        GrantDecision::NotPending,
        "decided once"
    );
    match accounts.poll_device_grant(&grant.device_code).await? {
        GrantPoll::Approved { user, client_name } => {
            assert_eq!(user.name, "ada");
            assert_eq!(client_name, "build box");
        }
        other => anyhow::bail!("not approved: {other:?}"),
    }
    assert_eq!(
        accounts.poll_device_grant(&grant.device_code).await?,
        GrantPoll::Unknown,
        "tokens are handed out once"
    );
    assert_eq!(
        accounts.poll_device_grant("pdd_nothing").await?,
        GrantPoll::Unknown
    );
    Ok(())
}

async fn a_denied_or_expired_device_grant_yields_nothing(accounts: Accounts) -> anyhow::Result<()> {
    let ada = accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let denied = accounts
        .start_device_grant(
            "tv",
            None,
            Duration::from_secs(600),
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(
        accounts.poll_device_grant(&denied.device_code).await?,
        GrantPoll::Pending
    );
    assert_eq!(
        accounts.poll_device_grant(&denied.device_code).await?,
        GrantPoll::SlowDown,
        "polled again within the interval"
    );
    accounts
        .decide_device_grant(&denied.user_code, &ada, false)
        .await?;
    assert_eq!(
        accounts.poll_device_grant(&denied.device_code).await?,
        GrantPoll::Denied
    );

    let expired = accounts
        .start_device_grant("tv", None, Duration::from_millis(1), Duration::ZERO)
        .await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        accounts
            .decide_device_grant(&expired.user_code, &ada, true)
            .await?,
        GrantDecision::NotPending
    );
    assert_eq!(
        accounts.poll_device_grant(&expired.device_code).await?,
        GrantPoll::Expired
    );
    Ok(())
}

async fn migrating_twice_changes_nothing(accounts: Accounts) -> anyhow::Result<()> {
    accounts
        .create_user("ada", PASSWORD, &ScopeSet::default_user())
        .await?;
    let again = Accounts::connect_with(&accounts_url(&accounts), options()).await?;
    assert_eq!(again.user_count().await?, 1);
    again.ping().await?;
    again.close().await;
    Ok(())
}
