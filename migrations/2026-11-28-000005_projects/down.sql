DROP TABLE association_groups_users;
DROP TABLE groups;
