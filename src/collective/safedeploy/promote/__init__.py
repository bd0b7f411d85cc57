"""bin/promote: a stage upgraded through its twin behind a balancer."""
