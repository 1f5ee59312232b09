DROP TABLE project_resource_policies;
DROP TABLE user_resource_policies;
