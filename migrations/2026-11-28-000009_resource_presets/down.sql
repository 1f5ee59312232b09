DROP TABLE resource_presets;
