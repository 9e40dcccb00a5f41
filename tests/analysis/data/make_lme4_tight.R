# Reference fits of lme4 with PIRLS run to a tight tolerance (tolPwrss = 1e-12).
# lme4's default (1e-7) stops PIRLS early and keeps the factor of the previous iterate, so
# its default GLMM estimates sit a few 1e-4 (relative) away from the optimum of the Laplace
# deviance; these fits are that optimum. Run: Rscript make_lme4_tight.R SHARED_DIR
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
dir <- file.path(if (length(args)) args[1] else "../../../../shared", "data", "lme4")
cb <- read.csv(file.path(dir, "cbpp.csv"))
cb$herd <- factor(cb$herd); cb$period <- factor(cb$period)
sim <- read.csv(file.path(dir, "sim2afc.csv"))
sim$participant <- factor(sim$participant); sim$item <- factor(sim$item)
sim$condition <- factor(sim$condition, levels = c("neurons", "dictionary"))
ctrl <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12,
                     optCtrl = list(rhobeg = 2e-3, rhoend = 2e-9, maxfun = 1e5))
fits <- list(
  cbpp = list(cbind(incidence, size - incidence) ~ period + (1 | herd), cb, "logit"),
  cbpp_probit = list(cbind(incidence, size - incidence) ~ period + (1 | herd), cb, "probit"),
  sim2afc_crossed = list(correct ~ condition + (1 | participant) + (1 | item), sim, "logit"),
  sim2afc_slope = list(correct ~ condition + (1 + condition | participant) + (1 | item),
                       sim, "logit"))
out <- list()
for (nm in names(fits)) {
  f <- fits[[nm]]
  m <- glmer(f[[1]], data = f[[2]], family = binomial(link = f[[3]]), control = ctrl)
  vc <- as.data.frame(VarCorr(m))
  out[[nm]] <- list(
    formula = paste(deparse(f[[1]]), collapse = ""), link = f[[3]],
    engine = paste("lme4", packageVersion("lme4"), "tolPwrss=1e-12"),
    fixef = as.list(fixef(m)),
    se = as.list(sqrt(diag(as.matrix(vcov(m))))),
    se_rx = as.list(sqrt(diag(as.matrix(vcov(m, use.hessian = FALSE))))),
    random = lapply(seq_len(nrow(vc)), function(i) as.list(vc[i, ])),
    loglik = as.numeric(logLik(m)), singular = isSingular(m), nobs = nobs(m))
}
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE),
      "lme4_tight.json")
