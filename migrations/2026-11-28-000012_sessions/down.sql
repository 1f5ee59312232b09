DROP TABLE agent_occupancy;
DROP TABLE session_dependencies;
DROP TABLE kernels;
DROP TABLE sessions;
