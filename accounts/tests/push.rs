//! Web Push subscriptions against real databases, once on a SQLite file and once on a
//! fresh PostgreSQL database, with the same body: registering is idempotent per
//! endpoint and capped per user, and subscriptions go away when removed, when their
//! push service calls them gone, and when their user is disabled or their device
//! revoked.

use anyhow::Context;
use paddock_accounts::{
    Accounts, AccountsError, AccountsOptions, NewPushSubscription, PasswordCost, PushRegistration,
    PushSubscription, ScopeSet, User,
};

paddock_testkit::on_sqlite_and_postgres!(
    open = open;
    registering_an_endpoint_twice_keeps_one_subscription,
    a_user_has_at_most_the_allowed_number_of_subscriptions,
    an_endpoint_registered_by_another_user_moves_to_them,
    subscriptions_are_removed_by_their_user_and_by_their_push_service,
    a_disabled_user_or_a_revoked_device_gets_no_notification,
    lengths_are_refused_before_anything_is_stored,
);

const PASSWORD: &str = "correct horse battery staple";
const MAX: usize = 3;

async fn open(url: &str) -> anyhow::Result<Accounts> {
    Accounts::connect_with(
        url,
        AccountsOptions {
            password_cost: PasswordCost::TEST_ONLY,
            ..AccountsOptions::default()
        },
    )
    .await
    .context("opening the accounts store")
}

async fn user(accounts: &Accounts, name: &str) -> anyhow::Result<User> {
    Ok(accounts
        .create_user(name, PASSWORD, &ScopeSet::default_user())
        .await?)
}

fn endpoint(n: usize) -> String {
    format!("https://push.example.net/send/{n}")
}

async fn register(
    accounts: &Accounts,
    user: &User,
    device: Option<&str>,
    endpoint: &str,
    auth: &str,
) -> anyhow::Result<PushRegistration> {
    Ok(accounts
        .save_push_subscription(
            &NewPushSubscription {
                user_id: &user.id,
                device_id: device,
                endpoint,
                p256dh: "BPublicKey",
                auth,
            },
            MAX,
        )
        .await?)
}

fn saved(registration: PushRegistration) -> anyhow::Result<PushSubscription> {
    match registration {
        PushRegistration::Saved(subscription) => Ok(subscription),
        other => anyhow::bail!("not saved: {other:?}"),
    }
}

async fn registering_an_endpoint_twice_keeps_one_subscription(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = user(&accounts, "ada").await?;
    let first = saved(register(&accounts, &ada, None, &endpoint(1), "auth-1").await?)?;
    let again = saved(register(&accounts, &ada, None, &endpoint(1), "auth-2").await?)?;
    assert_eq!(again.id, first.id, "one row per endpoint");
    assert_eq!(again.auth, "auth-2", "the newest keys win");
    assert_eq!(again.created_at_ms, first.created_at_ms);
    let listed = accounts.list_push_subscriptions(&ada.id).await?;
    assert_eq!(listed, vec![again.clone()]);
    assert_eq!(accounts.push_subscriptions_of("ada").await?, vec![again]);
    assert!(accounts.push_subscriptions_of("nobody").await?.is_empty());
    Ok(())
}

async fn a_user_has_at_most_the_allowed_number_of_subscriptions(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = user(&accounts, "ada").await?;
    for n in 0..MAX {
        saved(register(&accounts, &ada, None, &endpoint(n), "a").await?)?;
    }
    assert_eq!(
        register(&accounts, &ada, None, &endpoint(MAX), "a").await?,
        PushRegistration::TooMany { max: MAX }
    );
    // Renewing one she has is not a new one.
    saved(register(&accounts, &ada, None, &endpoint(0), "b").await?)?;
    assert_eq!(accounts.list_push_subscriptions(&ada.id).await?.len(), MAX);
    Ok(())
}

async fn an_endpoint_registered_by_another_user_moves_to_them(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = user(&accounts, "ada").await?;
    let bob = user(&accounts, "bob").await?;
    saved(register(&accounts, &ada, None, &endpoint(1), "a").await?)?;
    let moved = saved(register(&accounts, &bob, None, &endpoint(1), "b").await?)?;
    assert_eq!(moved.user_id, bob.id);
    assert!(accounts.push_subscriptions_of("ada").await?.is_empty());
    assert_eq!(accounts.push_subscriptions_of("bob").await?.len(), 1);
    Ok(())
}

async fn subscriptions_are_removed_by_their_user_and_by_their_push_service(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = user(&accounts, "ada").await?;
    let bob = user(&accounts, "bob").await?;
    saved(register(&accounts, &ada, None, &endpoint(1), "a").await?)?;
    let gone = saved(register(&accounts, &ada, None, &endpoint(2), "a").await?)?;
    assert!(
        !accounts
            .delete_push_subscription(&bob.id, &endpoint(1))
            .await?,
        "bob cannot remove ada's subscription"
    );
    assert!(
        accounts
            .delete_push_subscription(&ada.id, &endpoint(1))
            .await?
    );
    assert!(
        !accounts
            .delete_push_subscription(&ada.id, &endpoint(1))
            .await?
    );
    assert!(accounts.drop_push_subscription(&gone.id).await?);
    assert!(!accounts.drop_push_subscription(&gone.id).await?);
    assert!(accounts.list_push_subscriptions(&ada.id).await?.is_empty());
    saved(register(&accounts, &ada, None, &endpoint(3), "a").await?)?;
    assert_eq!(
        accounts.delete_push_subscriptions_of_user(&ada.id).await?,
        1
    );
    assert!(accounts.list_push_subscriptions(&ada.id).await?.is_empty());
    Ok(())
}

async fn a_disabled_user_or_a_revoked_device_gets_no_notification(
    accounts: Accounts,
) -> anyhow::Result<()> {
    let ada = user(&accounts, "ada").await?;
    let phone = accounts.start_session(&ada, "phone", None).await?.device;
    let laptop = accounts.start_session(&ada, "laptop", None).await?.device;
    saved(register(&accounts, &ada, Some(&phone.id), &endpoint(1), "a").await?)?;
    let kept = saved(register(&accounts, &ada, Some(&laptop.id), &endpoint(2), "a").await?)?;
    assert_eq!(accounts.push_subscriptions_of("ada").await?.len(), 2);

    accounts.revoke_device(&phone.id, "logout").await?;
    assert_eq!(accounts.push_subscriptions_of("ada").await?, vec![kept]);
    assert_eq!(
        accounts.list_push_subscriptions(&ada.id).await?.len(),
        1,
        "the revoked device's subscription is deleted, not only skipped"
    );

    accounts.set_disabled("ada", true).await?;
    assert!(accounts.push_subscriptions_of("ada").await?.is_empty());
    assert!(accounts.list_push_subscriptions(&ada.id).await?.is_empty());
    Ok(())
}

async fn lengths_are_refused_before_anything_is_stored(accounts: Accounts) -> anyhow::Result<()> {
    let ada = user(&accounts, "ada").await?;
    let long = format!(
        "https://push.example.net/{}",
        "x".repeat(paddock_accounts::MAX_ENDPOINT_BYTES)
    );
    let refused = register(&accounts, &ada, None, &long, "a").await;
    let refused = refused.err().context("an over-long endpoint was stored")?;
    assert!(
        matches!(
            refused.downcast_ref::<AccountsError>(),
            Some(AccountsError::Invalid {
                field: "endpoint",
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(accounts.list_push_subscriptions(&ada.id).await?.is_empty());
    Ok(())
}
