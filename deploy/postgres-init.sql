-- Databases of the compose stack: the monolith's truth and one service's replica.
CREATE DATABASE monolith;
CREATE DATABASE replica;
