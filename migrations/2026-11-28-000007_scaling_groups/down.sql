DROP TABLE sgroups_for_keypairs;
DROP TABLE sgroups_for_groups;
DROP TABLE sgroups_for_domains;
DROP TABLE scaling_groups;
