"""Local fakes of real brokers' protocols (tests, demos): each is a front over ``FakeBroker``'s state."""
