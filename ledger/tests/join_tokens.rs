//! Join tokens and node credentials against real databases: each test body runs once
//! on a SQLite file and once on a fresh PostgreSQL database, as the ledger tests do.

use paddock_ledger::{Ledger, NewJoinToken, RedeemError};
use std::collections::BTreeMap;

/// The ledger under test, migrated.
async fn open(url: &str) -> anyhow::Result<paddock_ledger::Ledger> {
    Ok(paddock_ledger::Ledger::connect(url).await?)
}

paddock_testkit::on_sqlite_and_postgres!(
    open = open;
    a_single_use_token_is_refused_when_reused,
    an_expired_token_is_refused_and_keeps_its_use,
    a_revoked_or_unknown_token_is_refused,
    a_token_with_several_uses_admits_that_many_nodes,
    a_node_with_credentials_in_force_cannot_join_again_until_revoked,
    racing_redeemers_of_the_last_use_have_one_winner,
    an_undone_join_gives_the_use_back,
    only_the_hash_of_a_token_is_stored,
);

const NOW: i64 = 1_700_000_000_000;

fn token(uses: u32, expires_in_ms: i64) -> NewJoinToken {
    NewJoinToken {
        created_by: "admin".into(),
        created_at_ms: NOW,
        expires_at_ms: NOW + expires_in_ms,
        uses,
        pool: Some("builders".into()),
        labels: BTreeMap::from([("xcode".into(), "16".into())]),
    }
}

async fn a_single_use_token_is_refused_when_reused(ledger: Ledger) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(1, 3_600_000)).await?;
    assert!(created.token.starts_with("pdj_"), "{:?}", created);
    let redeemed = ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY1", NOW + 1)
        .await?;
    assert_eq!(redeemed.pool.as_deref(), Some("builders"));
    assert_eq!(redeemed.labels.get("xcode").map(String::as_str), Some("16"));
    let again = ledger
        .redeem_join_token(&created.token, "mini-2", "UKEY2", NOW + 2)
        .await;
    assert!(matches!(again, Err(RedeemError::Used)), "{again:?}");
    let listed = ledger.join_tokens().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);
    assert_eq!((listed[0].uses, listed[0].uses_left), (1, 0));
    assert_eq!(listed[0].last_used_by.as_deref(), Some("mini-1"));
    let credentials = ledger.node_credentials(true).await?;
    assert_eq!(credentials.len(), 1);
    assert_eq!(credentials[0].node, "mini-1");
    assert_eq!(
        credentials[0].token_id.as_deref(),
        Some(created.id.as_str())
    );
    Ok(())
}

async fn an_expired_token_is_refused_and_keeps_its_use(ledger: Ledger) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(1, 1_000)).await?;
    let late = ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY1", NOW + 1_000)
        .await;
    assert!(matches!(late, Err(RedeemError::Expired)), "{late:?}");
    assert_eq!(ledger.join_tokens().await?[0].uses_left, 1);
    assert!(ledger.node_credentials(false).await?.is_empty());
    Ok(())
}

async fn a_revoked_or_unknown_token_is_refused(ledger: Ledger) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(3, 3_600_000)).await?;
    assert!(ledger.revoke_join_token(&created.id, NOW).await?);
    assert!(!ledger.revoke_join_token(&created.id, NOW).await?);
    assert!(!ledger.revoke_join_token("no-such-id", NOW).await?);
    let revoked = ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY1", NOW + 1)
        .await;
    assert!(matches!(revoked, Err(RedeemError::Revoked)), "{revoked:?}");
    let unknown = ledger
        .redeem_join_token("pdj_not-a-token", "mini-1", "UKEY1", NOW + 1)
        .await;
    assert!(matches!(unknown, Err(RedeemError::Invalid)), "{unknown:?}");
    assert!(ledger.join_tokens().await?[0].revoked_at_ms.is_some());
    Ok(())
}

async fn a_token_with_several_uses_admits_that_many_nodes(ledger: Ledger) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(2, 3_600_000)).await?;
    for (node, key) in [("mini-1", "UKEY1"), ("mini-2", "UKEY2")] {
        ledger
            .redeem_join_token(&created.token, node, key, NOW + 1)
            .await?;
    }
    let third = ledger
        .redeem_join_token(&created.token, "mini-3", "UKEY3", NOW + 1)
        .await;
    assert!(matches!(third, Err(RedeemError::Used)), "{third:?}");
    let nodes: Vec<String> = ledger
        .node_credentials(true)
        .await?
        .into_iter()
        .map(|c| c.node)
        .collect();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.contains(&"mini-1".to_string()) && nodes.contains(&"mini-2".to_string()));
    Ok(())
}

async fn a_node_with_credentials_in_force_cannot_join_again_until_revoked(
    ledger: Ledger,
) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(3, 3_600_000)).await?;
    ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY1", NOW + 1)
        .await?;
    let twice = ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY2", NOW + 2)
        .await;
    assert!(
        matches!(&twice, Err(RedeemError::NodeExists(node)) if node == "mini-1"),
        "{twice:?}"
    );
    // The refused attempt spent nothing.
    assert_eq!(ledger.join_tokens().await?[0].uses_left, 2);

    assert_eq!(
        ledger
            .revoke_node_credentials("mini-1", "admin", NOW + 3)
            .await?,
        1
    );
    assert_eq!(
        ledger
            .revoke_node_credentials("mini-1", "admin", NOW + 3)
            .await?,
        0
    );
    assert!(ledger.node_credentials(true).await?.is_empty());
    ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY3", NOW + 4)
        .await?;
    let all = ledger.node_credentials(false).await?;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].public_key, "UKEY1");
    assert_eq!(all[0].revoked_by.as_deref(), Some("admin"));
    let in_force = ledger.node_credentials(true).await?;
    assert_eq!(in_force.len(), 1);
    assert_eq!(in_force[0].public_key, "UKEY3");
    Ok(())
}

async fn racing_redeemers_of_the_last_use_have_one_winner(ledger: Ledger) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(1, 3_600_000)).await?;
    let mut racers = Vec::new();
    for n in 0..6 {
        let ledger = ledger.clone();
        let secret = created.token.clone();
        racers.push(tokio::spawn(async move {
            ledger
                .redeem_join_token(&secret, &format!("mini-{n}"), &format!("UKEY{n}"), NOW + 1)
                .await
        }));
    }
    let mut winners = 0;
    for racer in racers {
        match racer.await? {
            Ok(_) => winners += 1,
            Err(RedeemError::Used) => {}
            Err(other) => anyhow::bail!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(ledger.node_credentials(true).await?.len(), 1);
    Ok(())
}

async fn an_undone_join_gives_the_use_back(ledger: Ledger) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(1, 3_600_000)).await?;
    ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY1", NOW + 1)
        .await?;
    ledger.undo_join(&created.id, "UKEY1").await?;
    assert!(ledger.node_credentials(false).await?.is_empty());
    assert_eq!(ledger.join_tokens().await?[0].uses_left, 1);
    // Undoing twice changes nothing more.
    ledger.undo_join(&created.id, "UKEY1").await?;
    assert_eq!(ledger.join_tokens().await?[0].uses_left, 1);
    ledger
        .redeem_join_token(&created.token, "mini-1", "UKEY2", NOW + 2)
        .await?;
    Ok(())
}

async fn only_the_hash_of_a_token_is_stored(ledger: Ledger) -> anyhow::Result<()> {
    let created = ledger.create_join_token(&token(1, 3_600_000)).await?;
    let listed = format!("{:?}", ledger.join_tokens().await?);
    assert!(!listed.contains(&created.token), "{listed}");
    assert!(!format!("{created:?}").contains(&created.token));
    assert_ne!(
        paddock_ledger::hash_join_token(&created.token),
        created.token
    );
    Ok(())
}
