-- One database per service: no service reads another's.
CREATE DATABASE crm_intake;
CREATE DATABASE crm_case;
CREATE DATABASE crm_notification;
CREATE DATABASE crm_analytics;
