//! Filters and orders run against a real read-model table.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use manager_events::testing::TestDb;
use manager_query::minilang::{
    Field, FieldType, Fields, filter_sql, order_sql, parse_filter, parse_order,
};

const USER_FIELDS: Fields = Fields(&[
    Field::new("email", "email", FieldType::Text),
    Field::new("status", "status", FieldType::Enum),
    Field::new("uuid", "uuid", FieldType::Uuid),
    Field::new("created_at", "created_at", FieldType::Timestamp),
    Field::new(
        "need_password_change",
        "need_password_change",
        FieldType::Bool,
    ),
]);

#[derive(QueryableByName)]
struct Email {
    #[diesel(sql_type = Text)]
    email: String,
}

async fn query(db: &TestDb, filter: &str, order: &str) -> Vec<String> {
    let f = filter_sql(&parse_filter(filter).unwrap(), &USER_FIELDS, 1).unwrap();
    let o = order_sql(&parse_order(order).unwrap(), &USER_FIELDS).unwrap();
    let q = manager_events::prepared(format!(
        "SELECT email FROM users WHERE {} ORDER BY {o}",
        f.sql
    ))
    .cache(false);
    let rows: Vec<Email> = f.bind(q).load(&mut db.connection().await).await.unwrap();
    rows.into_iter().map(|r| r.email).collect()
}

#[tokio::test]
async fn filters_select_the_right_rows_with_bound_values() {
    let db = TestDb::new().await;
    db.connection()
        .await
        .batch_execute(
            "INSERT INTO users (uuid, username, email, password_hash, need_password_change, status, role, \
             domain_name, resource_policy, created_at, modified_at, position) VALUES \
             ('00000000-0000-0000-0000-000000000001', 'a', 'alice@example.com', 'h', false, 'active', 'user', 'default', 'default', '2024-01-01', '2024-01-01', 1), \
             ('00000000-0000-0000-0000-000000000002', 'b', 'bob@example.com', 'h', true, 'inactive', 'user', 'default', 'default', '2024-02-01', '2024-02-01', 2), \
             ('00000000-0000-0000-0000-000000000003', 'c', 'carol@test.org', 'h', false, 'active', 'admin', 'default', 'default', '2024-03-01', '2024-03-01', 3)",
        )
        .await
        .unwrap();
    assert_eq!(
        query(&db, r#"email ilike "%EXAMPLE.COM""#, "email").await,
        ["alice@example.com", "bob@example.com"]
    );
    assert_eq!(
        query(&db, r#"status == "ACTIVE""#, "-created_at").await,
        ["carol@test.org", "alice@example.com"]
    );
    assert_eq!(
        query(
            &db,
            r#"created_at >= "2024-02-01" & !(need_password_change is true)"#,
            "email"
        )
        .await,
        ["carol@test.org"]
    );
    assert_eq!(
        query(&db, r#"uuid in ["00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000003"]"#, "-email").await,
        ["carol@test.org", "bob@example.com"]
    );
    // A value that looks like SQL is only ever a value.
    assert!(
        query(&db, r#"email == "x' OR '1'='1""#, "email")
            .await
            .is_empty()
    );
}
