DROP TABLE keypair_resource_policies;
