"""Training: the fit loop, distillation losses and gates, teachers, DDP, continual adaptation."""
