//! The rate limiter against the halfstack Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use manager_command::auth::rate_limit::RateLimiter;

fn redis_url() -> String {
    std::env::var("MANAGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:8111".to_owned())
}

async fn limiter(window: Duration) -> RateLimiter {
    RateLimiter::connect(&redis_url())
        .await
        .expect("the halfstack Redis (just halfstack-up)")
        .with_window(window)
        .with_prefix(format!("test-ratelimit-{}", uuid::Uuid::new_v4()))
}

#[tokio::test]
async fn the_limit_is_exact_under_concurrency() {
    let limiter = limiter(Duration::from_secs(60)).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..25 {
                    if limiter.check("AKIA-CONCURRENT", 50).await.unwrap().allowed {
                        allowed += 1;
                    }
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += t.await.unwrap();
    }
    assert_eq!(allowed, 50, "200 requests against a limit of 50");
    let d = limiter.check("AKIA-CONCURRENT", 50).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(
        d.headers(),
        [
            ("X-RateLimit-Limit", "50".to_owned()),
            ("X-RateLimit-Remaining", "0".to_owned()),
            ("X-RateLimit-Window", "60".to_owned()),
        ]
    );
    // Another key is counted apart.
    assert!(limiter.check("AKIA-OTHER", 50).await.unwrap().allowed);
}

#[tokio::test]
async fn the_window_rolls_and_a_zero_limit_is_unlimited() {
    let limiter = limiter(Duration::from_millis(300)).await;
    for i in 0..3 {
        let d = limiter.check("AKIA-ROLL", 3).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 2 - i);
    }
    assert!(!limiter.check("AKIA-ROLL", 3).await.unwrap().allowed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        limiter.check("AKIA-ROLL", 3).await.unwrap().allowed,
        "old requests left the window"
    );
    for _ in 0..10 {
        assert!(limiter.check("AKIA-FREE", 0).await.unwrap().allowed);
    }
}
