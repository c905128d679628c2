//! A line's region: `product_region_code` (or `product['region']`) when the export has it,
//! else the region prefix of its usage type (`USE1-KiroEnterprise-Pro` → `us-east-1`). A Kiro
//! profile is per account and region, so a user subscribed in two regions of one account holds
//! two seats and is billed twice (Kiro's billing docs give Frankfurt and N. Virginia as the example).

/// Usage-type region prefixes, as AWS's price list writes them, and the region each stands for.
const PREFIXES: &[(&str, &str)] = &[
    ("USE1", "us-east-1"),
    ("USE2", "us-east-2"),
    ("USW1", "us-west-1"),
    ("USW2", "us-west-2"),
    ("CAN1", "ca-central-1"),
    ("EUC1", "eu-central-1"),
    ("EUC2", "eu-central-2"),
    ("EU", "eu-west-1"),
    ("EUW2", "eu-west-2"),
    ("EUW3", "eu-west-3"),
    ("EUN1", "eu-north-1"),
    ("EUS1", "eu-south-1"),
    ("APN1", "ap-northeast-1"),
    ("APN2", "ap-northeast-2"),
    ("APN3", "ap-northeast-3"),
    ("APS1", "ap-southeast-1"),
    ("APS2", "ap-southeast-2"),
    ("APS3", "ap-south-1"),
    ("APE1", "ap-east-1"),
    ("SAE1", "sa-east-1"),
    ("MES1", "me-south-1"),
    ("AFS1", "af-south-1"),
    ("UGW1", "us-gov-west-1"),
    ("UGE1", "us-gov-east-1"),
];

/// The region a line's region key names: a region name as is (`eu-central-1`), a known usage
/// type prefix mapped (`EUC1` → `eu-central-1`), an unknown prefix kept as written (`XYZ9`),
/// and anything that is not a region prefix (`KiroEnterprise` in a usage type without one, or
/// nothing) as `""`.
pub fn region_name(key: &str) -> String {
    let key = key.trim();
    if let Some((_, region)) = PREFIXES.iter().find(|(p, _)| *p == key) {
        return (*region).to_owned();
    }
    let is_region = key.contains('-')
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let is_prefix = (2..=5).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if is_region || is_prefix {
        key.to_owned()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_from_product_or_usage_type_prefix() {
        assert_eq!(region_name("USE1"), "us-east-1");
        assert_eq!(region_name("EUC1"), "eu-central-1");
        assert_eq!(region_name("eu-central-1"), "eu-central-1");
        assert_eq!(region_name("XYZ9"), "XYZ9", "an unknown prefix is kept");
        assert_eq!(region_name("KiroEnterprise"), "");
        assert_eq!(region_name("Tax"), "");
        assert_eq!(region_name(""), "");
    }
}
