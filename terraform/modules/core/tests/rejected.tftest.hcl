# Inputs the module refuses, each with the variable whose validation says why.

variables {
  token  = "CSTN1::0123abcd.0123456789abcdef0123456789abcdef"
  pinned = "CSTN1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa::0123abcd.0123456789abcdef0123456789abcdef"
}

run "an_even_master_count_is_refused" {
  command = plan
  variables { masters = 2 }
  expect_failures = [var.masters]
}

run "seven_masters_are_refused" {
  command = plan
  variables {
    masters           = 7
    master_join_token = var.token
  }
  expect_failures = [var.masters]
}

run "a_negative_agent_count_is_refused" {
  command = plan
  variables {
    private_agents   = -1
    agent_join_token = var.token
  }
  expect_failures = [var.private_agents]
}

run "a_fractional_public_agent_count_is_refused" {
  command = plan
  variables {
    public_agents    = 1.5
    agent_join_token = var.token
  }
  expect_failures = [var.public_agents]
}

run "an_upper_case_cluster_name_is_refused" {
  command = plan
  variables { cluster_name = "Prod_East" }
  expect_failures = [var.cluster_name]
}

run "a_too_short_cluster_name_is_refused" {
  command = plan
  variables { cluster_name = "ab" }
  expect_failures = [var.cluster_name]
}

run "a_cluster_name_ending_in_a_dash_is_refused" {
  command = plan
  variables { cluster_name = "capstan-" }
  expect_failures = [var.cluster_name]
}

run "a_bad_subnet_is_refused" {
  command = plan
  variables { subnet_cidr = "10.0.1.0" }
  expect_failures = [var.subnet_cidr]
}

run "a_malformed_token_is_refused" {
  command = plan
  variables {
    private_agents   = 1
    agent_join_token = "K10abc::server:secret"
  }
  expect_failures = [var.agent_join_token]
}

run "joining_masters_without_a_token_are_refused" {
  command = plan
  variables { masters = 3 }
  expect_failures = [var.master_join_token]
}

run "agents_without_a_token_are_refused" {
  command = plan
  variables { public_agents = 1 }
  expect_failures = [var.agent_join_token]
}

run "a_non_http_package_url_is_refused" {
  command = plan
  variables { package_url = "ftp://mirror.example.invalid/capstan.deb" }
  expect_failures = [var.package_url]
}

run "a_join_server_with_a_scheme_is_refused" {
  command = plan
  variables {
    join_server       = "https://10.0.0.5/"
    master_join_token = var.pinned
  }
  expect_failures = [var.join_server]
}

run "a_full_token_for_a_new_cluster_is_refused" {
  command = plan
  variables {
    private_agents   = 1
    agent_join_token = var.pinned
  }
  expect_failures = [var.agent_join_token]
}

run "one_token_for_both_roles_is_refused" {
  command = plan
  variables {
    masters           = 3
    private_agents    = 1
    master_join_token = var.token
    agent_join_token  = var.token
  }
  expect_failures = [var.agent_join_token]
}
