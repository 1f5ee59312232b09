DROP TABLE keypairs;
DROP TABLE keypair_data_keys;
