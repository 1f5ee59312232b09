DROP TABLE domains;
DROP TABLE projection_checkpoints;
