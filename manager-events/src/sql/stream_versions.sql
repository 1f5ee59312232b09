-- Current version and type of each named stream that exists: one index probe each.
SELECT s.id AS stream_id, e.stream_type, e.stream_version
FROM unnest($1::text[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT stream_type, stream_version
    FROM events
    WHERE stream_id = s.id
    ORDER BY stream_version DESC
    LIMIT 1
) AS e
