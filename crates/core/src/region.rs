//! Regions and zones, named as Tencent names them (`ap-guangzhou`,
//! `ap-guangzhou-3`, zone ID `100003`).

use gpucloud_api_types::Language;

/// A Tencent region.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// `ap-guangzhou`.
    pub code: &'static str,
    /// Chinese display name.
    pub name_zh: &'static str,
    /// English display name.
    pub name_en: &'static str,
    /// Numeric region ID (zone IDs are `id * 100000 + n`).
    pub id: u32,
    /// City, used in zone names.
    pub city_zh: &'static str,
    /// City in English.
    pub city_en: &'static str,
}

/// Regions gpucloud can serve.
pub const REGIONS: &[Region] = &[
    Region {
        code: "ap-guangzhou",
        name_zh: "华南地区(广州)",
        name_en: "South China(Guangzhou)",
        id: 1,
        city_zh: "广州",
        city_en: "Guangzhou",
    },
    Region {
        code: "ap-shanghai",
        name_zh: "华东地区(上海)",
        name_en: "East China(Shanghai)",
        id: 4,
        city_zh: "上海",
        city_en: "Shanghai",
    },
    Region {
        code: "ap-nanjing",
        name_zh: "华东地区(南京)",
        name_en: "East China(Nanjing)",
        id: 33,
        city_zh: "南京",
        city_en: "Nanjing",
    },
    Region {
        code: "ap-beijing",
        name_zh: "华北地区(北京)",
        name_en: "North China(Beijing)",
        id: 8,
        city_zh: "北京",
        city_en: "Beijing",
    },
    Region {
        code: "ap-chengdu",
        name_zh: "西南地区(成都)",
        name_en: "Southwest China(Chengdu)",
        id: 16,
        city_zh: "成都",
        city_en: "Chengdu",
    },
    Region {
        code: "ap-chongqing",
        name_zh: "西南地区(重庆)",
        name_en: "Southwest China(Chongqing)",
        id: 19,
        city_zh: "重庆",
        city_en: "Chongqing",
    },
    Region {
        code: "ap-hongkong",
        name_zh: "港澳台地区(中国香港)",
        name_en: "Hong Kong, Macau and Taiwan (China)(Hong Kong, China)",
        id: 5,
        city_zh: "香港",
        city_en: "Hong Kong",
    },
    Region {
        code: "ap-singapore",
        name_zh: "亚太东南(新加坡)",
        name_en: "Southeast Asia(Singapore)",
        id: 9,
        city_zh: "新加坡",
        city_en: "Singapore",
    },
    Region {
        code: "ap-bangkok",
        name_zh: "亚太东南(曼谷)",
        name_en: "Southeast Asia(Bangkok)",
        id: 23,
        city_zh: "曼谷",
        city_en: "Bangkok",
    },
    Region {
        code: "ap-jakarta",
        name_zh: "亚太东南(雅加达)",
        name_en: "Southeast Asia(Jakarta)",
        id: 72,
        city_zh: "雅加达",
        city_en: "Jakarta",
    },
    Region {
        code: "ap-seoul",
        name_zh: "亚太东北(首尔)",
        name_en: "Northeast Asia(Seoul)",
        id: 18,
        city_zh: "首尔",
        city_en: "Seoul",
    },
    Region {
        code: "ap-tokyo",
        name_zh: "亚太东北(东京)",
        name_en: "Northeast Asia(Tokyo)",
        id: 25,
        city_zh: "东京",
        city_en: "Tokyo",
    },
    Region {
        code: "ap-mumbai",
        name_zh: "亚太南部(孟买)",
        name_en: "South Asia(Mumbai)",
        id: 21,
        city_zh: "孟买",
        city_en: "Mumbai",
    },
    Region {
        code: "na-siliconvalley",
        name_zh: "美国西部(硅谷)",
        name_en: "West US(Silicon Valley)",
        id: 15,
        city_zh: "硅谷",
        city_en: "Silicon Valley",
    },
    Region {
        code: "na-ashburn",
        name_zh: "美国东部(弗吉尼亚)",
        name_en: "East US(Virginia)",
        id: 22,
        city_zh: "弗吉尼亚",
        city_en: "Virginia",
    },
    Region {
        code: "eu-frankfurt",
        name_zh: "欧洲地区(法兰克福)",
        name_en: "Europe(Frankfurt)",
        id: 17,
        city_zh: "法兰克福",
        city_en: "Frankfurt",
    },
    Region {
        code: "sa-saopaulo",
        name_zh: "南美地区(圣保罗)",
        name_en: "South America(São Paulo)",
        id: 74,
        city_zh: "圣保罗",
        city_en: "São Paulo",
    },
];

/// A region by code.
pub fn region(code: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.code == code)
}

/// A zone of a region, `ap-guangzhou-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The region.
    pub region: &'static str,
    /// The zone number.
    pub number: u32,
}

impl Zone {
    /// Parses `<region>-<n>`, where region is known and 1 ≤ n ≤ 99.
    pub fn parse(s: &str) -> Option<Self> {
        let (reg, n) = s.rsplit_once('-')?;
        // Digits only (`u32::parse` takes `+3`), no leading zero: one
        // spelling per zone.
        if n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: u32 = n.parse().ok().filter(|n| (1..=99).contains(n))?;
        Some(Self {
            region: region(reg)?.code,
            number,
        })
    }

    /// `ap-guangzhou-3`.
    pub fn code(&self) -> String {
        format!("{}-{}", self.region, self.number)
    }

    /// Numeric zone ID, as a string (`"100003"`).
    pub fn id(&self) -> String {
        let r = region(self.region).map_or(0, |r| r.id);
        (r * 100_000 + self.number).to_string()
    }

    /// Display name (`广州三区` / `Guangzhou Zone 3`).
    pub fn name(&self, lang: Language) -> String {
        let r = region(self.region).expect("parsed zones have known regions");
        match lang {
            Language::EnUs => format!("{} Zone {}", r.city_en, self.number),
            Language::ZhCn => format!("{}{}区", r.city_zh, chinese_number(self.number)),
        }
    }
}

fn chinese_number(n: u32) -> String {
    const DIGITS: [&str; 10] = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"];
    match n {
        0..=9 => DIGITS[n as usize].to_string(),
        10 => "十".to_string(),
        11..=19 => format!("十{}", DIGITS[(n % 10) as usize]),
        _ => {
            let tens = DIGITS[(n / 10) as usize];
            if n.is_multiple_of(10) {
                format!("{tens}十")
            } else {
                format!("{tens}十{}", DIGITS[(n % 10) as usize])
            }
        }
    }
}

/// Region display name in the requested language.
pub fn region_name(r: &Region, lang: Language) -> &'static str {
    match lang {
        Language::EnUs => r.name_en,
        Language::ZhCn => r.name_zh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones() {
        let z = Zone::parse("ap-guangzhou-3").unwrap();
        assert_eq!(z.id(), "100003");
        assert_eq!(z.name(Language::ZhCn), "广州三区");
        assert_eq!(z.name(Language::EnUs), "Guangzhou Zone 3");
        assert_eq!(z.code(), "ap-guangzhou-3");
        assert_eq!(Zone::parse("ap-guangzhou-4").unwrap().id(), "100004");
        assert_eq!(
            Zone::parse("ap-shanghai-12").unwrap().name(Language::ZhCn),
            "上海十二区"
        );
        assert!(Zone::parse("ap-guangzhou").is_none());
        assert!(Zone::parse("ap-guangzhou-+3").is_none());
        assert!(Zone::parse("ap-guangzhou-03").is_none());
        assert!(Zone::parse("ap-nowhere-1").is_none());
        assert!(Zone::parse("ap-guangzhou-0").is_none());
        assert!(Zone::parse("ap-guangzhou-03").is_none());
        assert!(Zone::parse("").is_none());
    }
}
