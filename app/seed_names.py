"""Name lists for the demo seed (`app/seed.py`): a mix of cultures, some with accents and apostrophes.

Plain data, no logic. Order matters: the seed draws from these lists with a fixed random seed, so
editing a list changes which names the demo data gets (but nothing else).
"""

FEMALE_FIRST_NAMES = [
    # East Africa
    "Wanjiru", "Achieng", "Njeri", "Akinyi", "Wambui", "Nyambura", "Atieno", "Chebet", "Jepkemoi",
    "Nafula", "Zawadi", "Imani", "Neema", "Amani", "Rehema", "Makena", "Wairimu", "Adhiambo",
    "Nasimiyu", "Mumbua", "Halima", "Saida", "Aisha", "Furaha",
    # West and Southern Africa
    "Adaeze", "Chiamaka", "Ngozi", "Folake", "Yetunde", "Abena", "Akosua", "Efua", "Ama",
    "Thandiwe", "Nomvula", "Lerato", "Zanele", "Naledi", "Ifeoma", "Funmilayo", "Aminata", "Fatou",
    # South Asia
    "Priya", "Ananya", "Aarohi", "Diya", "Kavya", "Meera", "Saanvi", "Ishita", "Nandini", "Lakshmi",
    "Fatima", "Ayesha", "Zainab", "Sana",
    # East and Southeast Asia
    "Mei", "Xiu", "Yuna", "Sakura", "Hana", "Aiko", "Ji-woo", "Seo-yeon", "Linh", "Thảo",
    "Mai", "Mayumi", "Lan", "Hoa",
    # Middle East and North Africa
    "Leila", "Yasmin", "Nour", "Mariam", "Rania", "Salma", "Layla", "Hiba", "Dalia", "Amira",
    # Latin America and Iberia
    "Sofía", "Valentina", "Isabella", "Camila", "Lucía", "María", "Gabriela", "Daniela", "Paula",
    "Ximena", "Renata", "Inês", "Beatriz",
    # Europe, North America, Oceania
    "Emma", "Olivia", "Charlotte", "Amelia", "Grace", "Chloe", "Hannah", "Zoë", "Clara", "Anna",
    "Sophie", "Mia", "Emily", "Ella", "Ruby", "Freya", "Isla", "Niamh", "Siobhán", "Aoife",
    "Ingrid", "Astrid", "Greta", "Elena", "Katarzyna", "Zofia", "Anastasia", "Irina", "Chiara",
    "Giulia", "Léa", "Camille", "Manon", "Maëlle", "Johanna", "Lena", "Marta", "Eva",
    "Abigail", "Madison", "Harper", "Evelyn", "Avery", "Scarlett", "Lily", "Nora", "Hazel",
    "Aurora", "Savannah", "Brooklyn", "Maya", "Naomi", "Ruth", "Esther", "Miriam", "Tamar",
    "Kaia", "Aroha", "Mere", "Leilani",
]

MALE_FIRST_NAMES = [
    # East Africa
    "Kamau", "Otieno", "Mwangi", "Kipchoge", "Baraka", "Juma", "Omondi", "Kiprono", "Wafula",
    "Mutua", "Njoroge", "Ochieng", "Kariuki", "Hamisi", "Jabari", "Tumaini", "Kibet", "Barasa",
    "Musa", "Daudi", "Abdi", "Hassan",
    # West and Southern Africa
    "Chinedu", "Emeka", "Oluwaseun", "Tunde", "Kwame", "Kofi", "Yaw", "Kwabena", "Ibrahima",
    "Mamadou", "Sipho", "Thabo", "Bongani", "Lwazi", "Obinna", "Chukwuemeka", "Babajide", "Sekou",
    # South Asia
    "Arjun", "Aarav", "Vihaan", "Rohan", "Aditya", "Kabir", "Ishaan", "Dev", "Rahul", "Sanjay",
    "Imran", "Bilal", "Omar", "Zaid",
    # East and Southeast Asia
    "Wei", "Jun", "Hiroshi", "Haruto", "Kenji", "Min-jun", "Seo-jun", "Minh", "Đức", "Huy",
    "Tuan", "Takumi", "Jian", "Bao",
    # Middle East and North Africa
    "Youssef", "Karim", "Tariq", "Rami", "Ziad", "Khalil", "Nabil", "Samir", "Amir", "Hamza",
    # Latin America and Iberia
    "Santiago", "Mateo", "Sebastián", "Diego", "Nicolás", "Alejandro", "Joaquín", "Tomás",
    "Emiliano", "Andrés", "Rafael", "João", "Gonçalo",
    # Europe, North America, Oceania
    "Liam", "Noah", "Oliver", "James", "William", "Henry", "Lucas", "Benjamin", "Jack", "Samuel",
    "Thomas", "Daniel", "Oscar", "Finn", "Seán", "Ciarán", "Patrick", "Conor", "Lars", "Erik",
    "Magnus", "Piotr", "Jakub", "Mikhail", "Dmitri", "Luca", "Marco", "Matteo", "Louis", "Théo",
    "Hugo", "Jules", "Lukas", "Felix", "Jonas", "Max", "Elias", "Leon", "Anton", "Stefan",
    "Ethan", "Mason", "Logan", "Elijah", "Caleb", "Isaac", "Wyatt", "Owen", "Nathan", "Aaron",
    "David", "Joseph", "Levi", "Tane", "Nikau", "Kai", "Mosese", "Sione",
]

LAST_NAMES = [
    # East Africa
    "Wanjiku", "Otieno", "Kamau", "Mwangi", "Ochieng", "Kiprotich", "Mutua", "Njoroge", "Odhiambo",
    "Wafula", "Kariuki", "Kimani", "Onyango", "Cheruiyot", "Barasa", "Muthoni", "Achieng", "Nyaga",
    "Korir", "Rotich", "Omondi", "Mohamed", "Ali", "Abdullahi", "Mwakilema", "Mushi", "Massawe",
    "Okello", "Nakato", "Mugisha",
    # West and Southern Africa
    "Okafor", "Adeyemi", "Okonkwo", "Eze", "Nwosu", "Adebayo", "Balogun", "Mensah", "Asante",
    "Owusu", "Boateng", "Diallo", "Traoré", "Ndiaye", "N'Diaye", "Diop", "Keïta", "Dlamini",
    "Nkosi", "Ndlovu", "Mokoena", "Khumalo", "Zulu", "Mahlangu", "Moyo", "Banda", "Phiri",
    # South Asia
    "Patel", "Sharma", "Singh", "Kumar", "Gupta", "Reddy", "Iyer", "Nair", "Menon", "Das",
    "Chatterjee", "Banerjee", "Khan", "Qureshi", "Siddiqui", "Rahman", "Hossain", "Fernando",
    "Perera", "D'Souza", "D'Cruz", "Shah", "Mehta", "Joshi",
    # East and Southeast Asia
    "Chen", "Wang", "Li", "Zhang", "Liu", "Huang", "Lin", "Wu", "Nguyễn", "Nguyen", "Tran", "Pham",
    "Le", "Kim", "Park", "Lee", "Choi", "Jung", "Tanaka", "Suzuki", "Sato", "Takahashi",
    "Watanabe", "Yamamoto", "Santos", "Reyes", "Cruz", "Bautista",
    # Middle East and North Africa
    "Haddad", "Khoury", "Nasser", "Mansour", "Saleh", "Hussein", "Ibrahim", "Abboud", "El-Amin",
    "Al-Farsi", "Bakr", "Darwish", "Farouk", "Hamdan", "Cohen", "Levi", "Mizrahi", "Friedman",
    # Latin America and Iberia
    "García", "Rodríguez", "Martínez", "Hernández", "López", "González", "Pérez", "Sánchez",
    "Ramírez", "Torres", "Flores", "Rivera", "Gómez", "Díaz", "Morales", "Ortiz", "Castillo",
    "Vargas", "Silva", "Oliveira", "Costa", "Pereira", "Almeida", "Carvalho",
    # Ireland and Britain
    "O'Brien", "O'Connor", "O'Sullivan", "O'Neill", "McCarthy", "Murphy", "Kelly", "Byrne",
    "Walsh", "Ryan", "Doyle", "Gallagher", "MacDonald", "Campbell", "Stewart", "Smith", "Jones",
    "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Roberts", "Johnson",
    "Wright", "Walker", "Robinson", "Thompson", "Hughes", "Clarke",
    # Continental Europe
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Wagner", "Rossi", "Russo",
    "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Dubois", "Martin", "Bernard",
    "Lefèvre", "Moreau", "Laurent", "Girard", "de Vries", "van den Berg", "Janssen", "Peeters",
    "Andersson", "Johansson", "Nilsson", "Larsen", "Hansen", "Kowalski", "Nowak", "Wiśniewska",
    "Novák", "Horvat", "Ivanov", "Petrov", "Popescu", "Papadopoulos", "Yılmaz", "Kaya",
    # Americas and Oceania
    "Miller", "Davis", "Anderson", "Jackson", "White", "Harris", "Young", "King", "Scott",
    "Green", "Baker", "Adams", "Nelson", "Carter", "Mitchell", "Begay", "Yazzie", "Tawhiri",
    "Ngata", "Fifita", "Tupou",
]

GUARDIAN_RELATIONSHIPS_PRIMARY = ["mother", "father", "mother", "father", "mother", "guardian",
                                  "grandmother", "aunt"]
